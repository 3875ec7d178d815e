"""What routes get injected. Everything is built once by app.wiring in the lifespan (main.py)
and kept on app state; the getters read it back.

The getters are `async def` so FastAPI calls them on the event loop instead of handing each to
the thread pool: they only read app state.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.bulk.jobs import Jobs
from app.config import Settings
from app.events.intake import EventIntake
from app.ledger.base import Ledger
from app.replication.batch import Batch
from app.replication.objects import DestinationObjects
from app.replication.replicator import Replicator
from app.wiring import Identities, Probe, Services


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_replicator(request: Request) -> Replicator:
    return _services(request).replicator


async def get_batch(request: Request) -> Batch:
    return _services(request).batch


async def get_objects(request: Request) -> DestinationObjects:
    return _services(request).objects


async def get_intake(request: Request) -> EventIntake:
    return _services(request).intake


async def get_jobs(request: Request) -> Jobs:
    return _services(request).jobs


async def get_probe(request: Request) -> Probe:
    return _services(request).probe


async def get_identities(request: Request) -> Identities:
    return _services(request).identities


async def get_ledger(request: Request) -> Ledger:
    return _services(request).ledger


SettingsDep = Annotated[Settings, Depends(get_settings)]
ReplicatorDep = Annotated[Replicator, Depends(get_replicator)]
BatchDep = Annotated[Batch, Depends(get_batch)]
ObjectsDep = Annotated[DestinationObjects, Depends(get_objects)]
IntakeDep = Annotated[EventIntake, Depends(get_intake)]
JobsDep = Annotated[Jobs, Depends(get_jobs)]
ProbeDep = Annotated[Probe, Depends(get_probe)]
LedgerDep = Annotated[Ledger, Depends(get_ledger)]
IdentitiesDep = Annotated[Identities, Depends(get_identities)]
