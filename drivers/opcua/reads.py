"""Read requests shared by the driver and ``browse``: both timestamps, any attribute, split to limits.

asyncua's ``read_values`` drops the StatusCode (a Bad value reads as None) and its default Read asks
for the source timestamp only; this always asks for both and keeps the whole DataValue.
"""

from __future__ import annotations

__all__ = ["read", "read_operation_limits"]

from collections.abc import Sequence

from asyncua import Client, ua

from agent.core.cancellation import cancellable, timeout
from drivers.opcua.plan import OperationLimits, chunks

_LIMIT_NODES = (
    ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
    ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
    ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerTranslateBrowsePathsToNodeIds,
)


async def read(
    client: Client,
    ids: Sequence[ua.NodeId | None],
    *,
    timeout_s: float,
    limit: int,
    attribute: ua.AttributeIds = ua.AttributeIds.Value,
) -> list[ua.DataValue]:
    """One Read per ``limit`` nodes, each bounded by ``timeout_s``; results in the order of ``ids``."""
    results: list[ua.DataValue] = []
    for part in chunks(ids, limit):
        params = ua.ReadParameters()
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        for node in part:
            rv = ua.ReadValueId()
            rv.NodeId = node
            rv.AttributeId = attribute
            params.NodesToRead.append(rv)
        async with timeout(timeout_s):
            results.extend(await cancellable(client.uaclient.read(params)))
    return results


async def read_operation_limits(client: Client, *, timeout_s: float) -> OperationLimits:
    """The server's OperationLimits; 0 for each one it does not state (or cannot read)."""
    values = await read(
        client, [ua.NodeId(ua.Int32(n)) for n in _LIMIT_NODES], timeout_s=timeout_s, limit=len(_LIMIT_NODES)
    )
    numbers = [
        int(v.Value.Value)
        if v.StatusCode is not None and v.StatusCode.is_good() and v.Value is not None and v.Value.Value
        else 0
        for v in values
    ]
    return OperationLimits(*numbers)
