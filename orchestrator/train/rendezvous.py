"""Train's torch.distributed rendezvous on loopback when Ray runs on one machine.

Ray Train (gloo or NCCL) has rank 0 host a `TCPStore` at MASTER_ADDR:MASTER_PORT, and torch's
store server listens on every interface whatever the address; it has no bind setting. When the
node's IP is loopback (Ray's one-machine mode, `frontier.loopback_only`), rank 0 instead hosts
the store on a socket it bound to 127.0.0.1 itself (`master_listen_fd`) and every rank joins it
as a client, the way torchelastic's agent store works (`TORCHELASTIC_USE_AGENT_STORE`). On a
cluster node nothing changes.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta

from ray.train.torch import TorchConfig
from ray.train.torch.config import _TorchBackend

LOOPBACK = "127.0.0.1"
# The store lives as long as the Train worker process that hosts it.
_store = None


def _host_loopback_store(world_size: int, timeout_s: float) -> tuple[str, int] | None:
    """On rank 0: a store bound to 127.0.0.1, or None when this node is not on loopback."""
    global _store
    import ray
    import torch.distributed as dist

    if ray.util.get_node_ip_address() != LOOPBACK:
        return None
    sock = socket.socket()
    sock.bind((LOOPBACK, 0))
    sock.listen(128)
    _store = dist.TCPStore(
        LOOPBACK,
        sock.getsockname()[1],
        world_size,
        True,
        timeout=timedelta(seconds=timeout_s),
        wait_for_workers=False,
        master_listen_fd=sock.detach(),
    )
    return LOOPBACK, _store.port


def _join_hosted_store() -> None:
    # torch's env:// rendezvous then connects as a client to MASTER_ADDR:MASTER_PORT (which Ray
    # sets to the hosted store's address) instead of starting a server on rank 0.
    os.environ["TORCHELASTIC_USE_AGENT_STORE"] = "True"


class _HostedAddress:
    """The worker group as Ray's backend sees it, except that rank 0's "address and free port"
    is the store already hosted there."""

    def __init__(self, worker_group, address: tuple[str, int]):
        self._group = worker_group
        self._address = address

    def execute_single(self, rank: int, fn, *args, **kwargs):
        if rank == 0 and getattr(fn, "__name__", "") == "get_address_and_port":
            return self._address
        return self._group.execute_single(rank, fn, *args, **kwargs)

    def __len__(self) -> int:
        return len(self._group)

    def __getattr__(self, name: str):
        return getattr(self._group, name)


class _LoopbackTorchBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config: TorchConfig):
        address = worker_group.execute_single(
            0, _host_loopback_store, len(worker_group), backend_config.timeout_s
        )
        if address is None or backend_config.init_method != "env":
            return super().on_start(worker_group, backend_config)
        worker_group.execute(_join_hosted_store)
        return super().on_start(_HostedAddress(worker_group, address), backend_config)


@dataclass
class LoopbackTorchConfig(TorchConfig):
    """`TorchConfig` whose rendezvous stays on 127.0.0.1 on a loopback node."""

    @property
    def backend_cls(self):
        return _LoopbackTorchBackend
