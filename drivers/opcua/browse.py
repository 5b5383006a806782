"""``mine-agent browse opc.tcp://HOST:PORT``: print a server's address space, or a config fragment.

For the technician commissioning a gateway: which nodes exist, their NodeIds, data types and current
values, and, with ``--fragment``, ready ``[[devices.<name>.tags]]`` entries for the variables found.
Fragments use ``nsu=<namespace URI>`` NodeIds because a server may renumber its namespace indexes
after a restart or an upgrade, while URIs stay.

Connection settings mirror the device config: ``--policy/--mode/--pki-dir`` and
``--username/--password-file``, and they go through the same trust list, so browsing a secured server
for the first time saves its certificate to ``rejected/`` like the agent does.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from agent.core.cancellation import timeout
from agent.core.errors import DriverError
from drivers.opcua.config import DEFAULT_PKI_DIR, NAME_MAX, OpcUaDevice
from drivers.opcua.plan import effective_limit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="server endpoint, e.g. opc.tcp://10.0.0.5:4840")
    parser.add_argument("--node", default="i=85", help="start node (NodeId); default Objects (i=85)")
    parser.add_argument("--depth", type=int, default=3, help="levels below the start node (default 3)")
    parser.add_argument("--endpoints", action="store_true", help="list the server's endpoints and exit")
    parser.add_argument(
        "--fragment", metavar="DEVICE", help="print a config fragment for device DEVICE instead of the tree"
    )
    parser.add_argument(
        "--select",
        action="append",
        default=[],
        metavar="GLOB",
        help="with --fragment: only variables whose browse path matches (e.g. '*Hoist*'); repeatable",
    )
    parser.add_argument(
        "--policy", default="None", help="None, Basic256Sha256, Aes128Sha256RsaOaep, Aes256Sha256RsaPss"
    )
    parser.add_argument("--mode", help="Sign or SignAndEncrypt (needed with a policy)")
    parser.add_argument("--pki-dir", type=Path, default=DEFAULT_PKI_DIR, help=f"default: {DEFAULT_PKI_DIR}")
    parser.add_argument("--username")
    parser.add_argument("--password-file", type=Path, help="file whose first line is the password")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")


def main(args: argparse.Namespace) -> int:
    return asyncio.run(run(args, sys.stdout))


@dataclass(slots=True)
class Found:
    """One node seen while browsing."""

    depth: int
    path: str
    browse_name: str
    node_id: str
    node_class: str
    data_type: str = ""
    value: str = ""


async def run(args: argparse.Namespace, out: TextIO) -> int:
    from asyncua import Client
    from asyncua.ua.uaerrors import UaError

    from drivers.opcua.session import build_client, describe_error

    cfg = _device_for(args)
    if args.endpoints:
        probe = Client(args.url, timeout=args.timeout)
        try:
            async with timeout(args.timeout * 2):
                endpoints = await probe.connect_and_get_server_endpoints()
        except (OSError, TimeoutError) as exc:
            raise DriverError(f"cannot reach {args.url}: {describe_error(exc)}") from exc
        for ep in endpoints:
            policy = ep.SecurityPolicyUri.rsplit("#", 1)[-1].replace("_", "")  # the config's spelling
            tokens = ", ".join(t.TokenType.name for t in ep.UserIdentityTokens)
            mode = ep.SecurityMode.name.rstrip("_")
            print(f"{ep.EndpointUrl}  policy={policy}  mode={mode}  identities={tokens}", file=out)
        return 0
    client, validator = await build_client("browse", cfg)
    try:
        async with timeout(args.timeout * 2):
            await client.connect()
    except Exception as exc:
        rejected = validator.rejected_file if validator is not None else None
        hint = (
            f"trust it with: mine-agent opcua trust {rejected} --pki-dir {args.pki_dir}" if rejected else None
        )
        raise DriverError(f"cannot connect to {args.url}: {describe_error(exc)}", hint=hint) from exc
    try:
        async with timeout(args.timeout):
            namespaces = await client.get_namespace_array()
        found = await _walk(client, args.node, args.depth, args.timeout)
    except (OSError, TimeoutError, UaError) as exc:
        raise DriverError(f"browsing {args.url} failed: {describe_error(exc)}") from exc
    finally:
        try:
            async with timeout(2):
                await client.disconnect()
        except Exception:  # closing a browse session is best effort
            client.disconnect_socket()
    if args.fragment:
        print(fragment(args.fragment, args.url, found, args.select, namespaces), file=out)
    else:
        for f in found:
            line = f"{'  ' * f.depth}{f.browse_name}  {f.node_id}  {f.node_class}"
            if f.node_class == "Variable":
                line += f"  {f.data_type} = {f.value}"
            print(line, file=out)
    return 0


async def _walk(client: Any, start: str, depth: int, request_s: float) -> list[Found]:
    """Breadth of hierarchical references below ``start``, values read in batches, depth-first output."""
    from asyncua import ua

    from drivers.opcua.reads import read, read_operation_limits

    limits = await read_operation_limits(client, timeout_s=request_s)
    limit = effective_limit(limits.max_nodes_per_read, 0)
    root = client.get_node(start)
    found: list[Found] = []

    async def visit(node: Any, level: int, path: str) -> None:
        if level > depth:
            return
        async with timeout(request_s):
            refs = await node.get_children_descriptions()
        variables = [r for r in refs if r.NodeClass == ua.NodeClass.Variable]
        info: dict[str, tuple[str, str]] = {}
        if variables:
            ids = [r.NodeId for r in variables]
            values = await read(client, ids, timeout_s=request_s, limit=limit)
            types = await read(
                client, ids, timeout_s=request_s, limit=limit, attribute=ua.AttributeIds.DataType
            )
            for ref, dv, dt in zip(variables, values, types, strict=True):
                info[ref.NodeId.to_string()] = (_type_name(dt), _value_text(dv))
        for ref in refs:
            name = ref.BrowseName.Name
            qualified = f"{ref.BrowseName.NamespaceIndex}:{name}" if ref.BrowseName.NamespaceIndex else name
            child_path = f"{path}/{qualified}"
            node_id = ref.NodeId.to_string()
            data_type, value = info.get(node_id, ("", ""))
            found.append(Found(level, child_path, name, node_id, ref.NodeClass.name, data_type, value))
            if ref.NodeClass == ua.NodeClass.Object:
                await visit(client.get_node(ref.NodeId), level + 1, child_path)

    start_path = "Objects" if start == "i=85" else start
    await visit(root, 0, start_path)
    return found


def _type_name(dv: Any) -> str:
    from asyncua import ua

    node = dv.Value.Value if dv.Value is not None else None
    if node is None:
        return "?"
    if node.NamespaceIndex == 0 and node.Identifier in ua.ObjectIdNames:
        return str(ua.ObjectIdNames[node.Identifier])
    return node.to_string()


def _value_text(dv: Any) -> str:
    from drivers.opcua.status import quality_of, status_name

    code = dv.StatusCode.value if dv.StatusCode is not None else 0
    if quality_of(code):
        return f"<{status_name(code)}>"
    text = repr(dv.Value.Value) if dv.Value is not None else "None"
    return text if len(text) <= 60 else text[:57] + "..."


_NUMERIC = {
    "Boolean",
    "SByte",
    "Byte",
    "Int16",
    "UInt16",
    "Int32",
    "UInt32",
    "Int64",
    "UInt64",
    "Float",
    "Double",
    "String",
}


def fragment(device: str, url: str, found: list[Found], select: list[str], namespaces: list[str]) -> str:
    """TOML for the variables found (optionally filtered), with names that pass config validation."""
    lines = [f"[devices.{device}]", 'protocol = "opcua"', f'url = "{url}"', ""]
    used: set[str] = set()
    for f in found:
        if f.node_class != "Variable" or (select and not any(fnmatch.fnmatch(f.path, g) for g in select)):
            continue
        if f.data_type not in _NUMERIC:
            continue
        name = tag_name(f.browse_name, used)
        lines += [
            f"[[devices.{device}.tags]]",
            f'name = "{name}"',
            f'node = "{_with_uri(f.node_id, namespaces)}"',
            f"## {f.path} ({f.data_type})",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def _with_uri(node_id: str, namespaces: list[str]) -> str:
    match = re.match(r"^ns=(\d+);(.*)$", node_id, re.DOTALL)
    if match and int(match.group(1)) < len(namespaces):
        return f"nsu={namespaces[int(match.group(1))]};{match.group(2)}"
    return node_id


def tag_name(browse_name: str, used: set[str]) -> str:
    """A valid, unique tag name from a browse name: invalid characters become '_'."""
    base = re.sub(r"[^A-Za-z0-9_-]", "_", browse_name).strip("_") or "tag"
    if not base[0].isalpha():
        base = "t_" + base
    base = base[:NAME_MAX]
    name, n = base, 2
    while name in used:
        suffix = f"_{n}"
        name, n = base[: NAME_MAX - len(suffix)] + suffix, n + 1
    used.add(name)
    return name


def _device_for(args: argparse.Namespace) -> OpcUaDevice:
    """The same model the agent validates, so browsing connects exactly as the agent would."""
    security: dict[str, Any] = {"policy": args.policy, "pki_dir": args.pki_dir}
    if args.mode:
        security["mode"] = args.mode
    identity: dict[str, Any] = {}
    if args.username:
        identity = {"kind": "username", "username": args.username, "password_file": args.password_file}
    try:
        return OpcUaDevice.model_validate(
            {
                "protocol": "opcua",
                "url": args.url,
                "security": security,
                "identity": identity or {},
                "timeout_s": args.timeout,
                "tags": [{"name": "browse", "node": "i=85"}],
            }
        )
    except ValueError as exc:
        raise DriverError(f"invalid browse options: {exc}") from exc
