"""Local dask and Ray clusters on 127.0.0.1, for the distributed tests."""

from __future__ import annotations

import contextlib
from pathlib import Path

import dask.distributed
import ray

#: The tests folder: Ray workers import the tests' helpers by reference from it.
TESTS = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def local_dask_client(n_workers: int):
    """A ``dask.distributed.Client`` of ``n_workers`` processes, one thread each, closed after."""
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


@contextlib.contextmanager
def local_ray(num_cpus: int):
    """A local Ray session of ``num_cpus`` CPUs whose workers find the tests folder; shut
    down after."""
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"PYTHONPATH": str(TESTS)}},
    )
    try:
        yield ray
    finally:
        ray.shutdown()
