"""A local dask cluster of worker processes, one thread each, for the distributed tests."""

from __future__ import annotations

import contextlib

import dask.distributed


@contextlib.contextmanager
def local_dask_client(n_workers: int):
    """A ``dask.distributed.Client`` of ``n_workers`` processes on 127.0.0.1, closed after."""
    cluster = dask.distributed.LocalCluster(
        n_workers=n_workers,
        processes=True,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address=None,
    )
    client = dask.distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
