"""Resumable fits: Keras' ``BackupAndRestore`` with atomic, self-describing backups.

Keras' :class:`keras.callbacks.BackupAndRestore` backs up the training state
(weights, optimizer state, epoch) at the end of every epoch, restores it when
``fit`` starts again, and removes it when ``fit`` completes. Its Keras 3 form
overwrites ``latest.weights.h5`` in place and then writes the epoch to a second
file, so a process killed during the save leaves a truncated weights file, or
weights of one epoch beside the number of another, or a truncated JSON file
that stops the next ``fit`` with a ``JSONDecodeError``.

:class:`AtomicBackupAndRestore` keeps Keras' behaviour and makes the write
atomic. The state of epoch ``k`` is

1. the weights and optimizer state, written to a hidden temporary file, flushed
   to disk and renamed to ``epoch-<k>.weights.h5`` (a new name every epoch);
2. ``state.json``: the epoch, the weights file's name, the history so far and a
   fingerprint of the fit, written to a temporary file, flushed and renamed
   over the old one (``os.replace``, atomic on POSIX file systems);
3. then, and only then, the previous weights file is removed.

A process killed at any point leaves ``state.json`` naming a complete weights
file: the previous epoch's before step 2, the new one after it. Leftover
temporary files are ignored and removed by the next save.

In a multi-worker fit only the chief writes the backup (the other workers
save into a temporary directory they remove at once: reading distributed
variables takes every worker's part); every worker restores from the same
directory, which must therefore be on storage they all read (a shared file
system).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid

import keras

__all__ = ["AtomicBackupAndRestore", "STATE_FILE"]

#: The file naming the latest complete backup.
STATE_FILE = "state.json"
_TMP = ".tmp-"
_FORMAT = 1


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not supported on this platform / file system
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _replace_durably(tmp, final):
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    _fsync_dir(os.path.dirname(final) or ".")


def read_state(backup_dir) -> dict | None:
    """The latest complete backup's ``state.json`` as a dict, or None when there is none."""
    path = os.path.join(os.fspath(backup_dir), STATE_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Back up the training state after every epoch, atomically; restore it when ``fit`` starts.

    Parameters
    ----------
    backup_dir : str or path-like
        The directory of the backup (created when needed, removed after a
        completed fit). Not to be shared with another fit.
    fingerprint : dict, optional
        JSON-serialisable description of the fit (hyperparameters, data
        shapes). A backup with another fingerprint is refused with a
        ``ValueError`` instead of being restored into a different model.
    writer : bool, default True
        Whether this process writes the backup (False on non-chief workers).

    Attributes
    ----------
    restored_epoch : int
        Epochs already run according to the restored backup (0 when none).
    history : dict
        Per-epoch logs of every epoch run so far, the restored ones included.
    """

    def __init__(self, backup_dir, fingerprint: dict | None = None, writer: bool = True):
        super().__init__(os.fspath(backup_dir), save_freq="epoch", delete_checkpoint=True)
        self.fingerprint = {} if fingerprint is None else dict(fingerprint)
        self.writer = bool(writer)
        self.restored_epoch = 0
        self.history: dict[str, list[float]] = {}

    # ---- restore -----------------------------------------------------------------
    def on_train_begin(self, logs=None):
        state = read_state(self.backup_dir)
        self.restored_epoch, self.history = 0, {}
        if state is None:
            return
        if state.get("format") != _FORMAT or state.get("fingerprint") != self.fingerprint:
            differ = sorted(
                k
                for k in set(self.fingerprint) | set(state.get("fingerprint", {}))
                if self.fingerprint.get(k) != state.get("fingerprint", {}).get(k)
            )
            raise ValueError(
                f"checkpoint_dir={self.backup_dir!r} holds the backup of a different fit "
                f"(differs in: {', '.join(differ) or 'format'}). Start it again with the same "
                "arguments and data to resume it, or remove the directory (or choose another) "
                "to start afresh."
            )
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)  # its state is in the file too
        model.load_weights(os.path.join(self.backup_dir, state["weights"]))
        self.restored_epoch = int(state["epoch"])
        self.history = {k: list(v) for k, v in state.get("history", {}).items()}
        # Keras' own BackupAndRestore tells fit where to start the same way.
        model._initial_epoch = self.restored_epoch

    # ---- save --------------------------------------------------------------------
    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        if self.writer:
            self._save_atomically(epoch + 1)
        else:
            self._save_elsewhere()

    def on_train_batch_end(self, batch, logs=None):
        pass  # epoch-level backups only

    def _save_elsewhere(self):
        """A non-chief worker saves too (reading distributed variables may need every worker's
        participation), into a temporary directory that is removed at once."""
        tmp = tempfile.mkdtemp(prefix="stablekeras-backup-")
        try:
            self.model.save_weights(os.path.join(tmp, "discarded.weights.h5"))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _save_atomically(self, epoch: int):
        directory = self.backup_dir
        os.makedirs(directory, exist_ok=True)
        token = uuid.uuid4().hex
        weights = f"epoch-{epoch:06d}.weights.h5"
        tmp_weights = os.path.join(directory, f"{_TMP}{token}.weights.h5")
        self.model.save_weights(tmp_weights)
        _replace_durably(tmp_weights, os.path.join(directory, weights))
        state = {
            "format": _FORMAT,
            "epoch": epoch,
            "weights": weights,
            "history": self.history,
            "fingerprint": self.fingerprint,
        }
        tmp_state = os.path.join(directory, f"{_TMP}{token}.json")
        with open(tmp_state, "w", encoding="utf-8") as fh:
            json.dump(state, fh)
        _replace_durably(tmp_state, os.path.join(directory, STATE_FILE))
        # Only now is the previous backup unreferenced; remove it and any leftovers.
        for name in os.listdir(directory):
            stale = name.startswith(_TMP) and token not in name
            old = name.endswith(".weights.h5") and name.startswith("epoch-") and name != weights
            if stale or old:
                try:
                    os.remove(os.path.join(directory, name))
                except FileNotFoundError:
                    pass

    # ---- end ---------------------------------------------------------------------
    def on_train_end(self, logs=None):
        if self.writer and os.path.exists(self.backup_dir):
            shutil.rmtree(self.backup_dir, ignore_errors=True)
