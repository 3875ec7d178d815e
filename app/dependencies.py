"""Clients are built once in the lifespan (main.py) and kept on app state; routes get them here.

The getters are `async def` so FastAPI calls them on the event loop instead of handing each to
the thread pool: they only read app state.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.services.replicator import Replicator
from app.storage.base import Destination, Source


@dataclass(frozen=True)
class Probe:
    """Clients with short timeouts and no retries, for the start-up probe and /ready."""

    source: Source
    destination: Destination


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_replicator(request: Request) -> Replicator:
    replicator: Replicator = request.app.state.replicator
    return replicator


async def get_destination(request: Request) -> Destination:
    destination: Destination = request.app.state.destination
    return destination


async def get_probe(request: Request) -> Probe:
    probe: Probe = request.app.state.probe
    return probe


async def get_batch_pool(request: Request) -> ThreadPoolExecutor:
    pool: ThreadPoolExecutor = request.app.state.batch_pool
    return pool


SettingsDep = Annotated[Settings, Depends(get_settings)]
ReplicatorDep = Annotated[Replicator, Depends(get_replicator)]
DestinationDep = Annotated[Destination, Depends(get_destination)]
BatchPoolDep = Annotated[ThreadPoolExecutor, Depends(get_batch_pool)]
ProbeDep = Annotated[Probe, Depends(get_probe)]
