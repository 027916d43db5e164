"""Drives Corral's MCP endpoint (`POST /mcp` on `corral serve`) with the official MCP Python
SDK, a client written by other people than Corral's server: tools, a tool call, pipelines as
tasks of the tasks extension (io.modelcontextprotocol/tasks, SEP-2663) to completion, an
answered input request, a cancel, tenant isolation and the argument-size cap.

Run by tests/all/mcp_python.rs with the project venv's python (`./x test` installs the pinned
SDK). Arguments (all required):

  --url URL               the endpoint, http://127.0.0.1:PORT/mcp
  --token TOKEN           a token of the tenant that has the tools and pipelines
  --other-token TOKEN     a token of another tenant, which must see none of them
  --tool NAME             a tool to call, with --tool-args (JSON object) and
                          --tool-expect (JSON: what its structuredContent must be)
  --error-tool NAME       a tool call with --error-args that the guest refuses (isError)
  --expect-tools A,B,...  every tool name that tools/list must have (GET /v1/tools's)
  --done-pipeline NAME    a stored pipeline that echoes its input
  --ask-pipeline NAME     a stored pipeline whose step asks {"approved": bool}, --question
  --oversize-bytes N      an argument string of N bytes is over the server's cap

Prints one line per check ("ok NAME" or "FAIL NAME: why") and exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from typing import Any, Literal

import anyio
import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.session import ClientRequestContext, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from pydantic import TypeAdapter

TASKS = "io.modelcontextprotocol/tasks"
MODERN = "2026-07-28"
# Every wait is bounded; a stuck run fails its check instead of hanging the suite.
TASK_DEADLINE_SECONDS = 60.0
READ_TIMEOUT_SECONDS = 30.0


# ---- the tasks extension, client side (SEP-2663 wire shapes) ----


class CreateTaskResult(types.Result):
    """`tools/call` answered as a task: `resultType: "task"` and the task's seed state."""

    result_type: Literal["task"]
    task_id: str
    status: str
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None = None
    poll_interval_ms: int | None = None


class DetailedTask(types.Result):
    """`tasks/get`'s answer: the task, with `inputRequests`, `result` or `error` by status."""

    task_id: str
    status: Literal["working", "input_required", "completed", "failed", "cancelled"]
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None = None
    poll_interval_ms: int | None = None
    input_requests: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class TaskIdParams(types.RequestParams):
    task_id: str


class UpdateTaskParams(types.RequestParams):
    task_id: str
    input_responses: dict[str, Any]


class GetTaskRequest(types.Request[TaskIdParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: TaskIdParams
    name_param = "taskId"  # SEP-2663: tasks/* carry the task id as Mcp-Name


class UpdateTaskRequest(types.Request[UpdateTaskParams, Literal["tasks/update"]]):
    method: Literal["tasks/update"] = "tasks/update"
    params: UpdateTaskParams
    name_param = "taskId"


class CancelTaskRequest(types.Request[TaskIdParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: TaskIdParams
    name_param = "taskId"


class Ack(types.Result):
    """The empty acknowledgement of tasks/update and tasks/cancel."""


INPUT_REQUEST = TypeAdapter(types.InputRequest)
TERMINAL = ("completed", "failed", "cancelled")


async def tasks_get(session: ClientSession, task_id: str) -> DetailedTask:
    return await session.send_request(GetTaskRequest(params=TaskIdParams(task_id=task_id)), DetailedTask)


async def tasks_update(session: ClientSession, task_id: str, responses: dict[str, Any]) -> Ack:
    dumped = {k: v.model_dump(by_alias=True, mode="json", exclude_none=True) for k, v in responses.items()}
    return await session.send_request(
        UpdateTaskRequest(params=UpdateTaskParams(task_id=task_id, input_responses=dumped)), Ack
    )


async def tasks_cancel(session: ClientSession, task_id: str) -> Ack:
    return await session.send_request(CancelTaskRequest(params=TaskIdParams(task_id=task_id)), Ack)


async def poll(session: ClientSession, task_id: str, until: tuple[str, ...]) -> DetailedTask:
    """`tasks/get` until the task's status is one of `until` (or terminal), within the deadline."""
    deadline = time.monotonic() + TASK_DEADLINE_SECONDS
    seen: list[str] = []
    while True:
        task = await tasks_get(session, task_id)
        if not seen or seen[-1] != task.status:
            seen.append(task.status)
        if task.status in until or task.status in TERMINAL:
            return task
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} still {task.status} after {TASK_DEADLINE_SECONDS}s (seen {seen})")
        # Honour the server's hint, but poll at least twice a second so the test stays short.
        interval = (task.poll_interval_ms or 200) / 1000
        await anyio.sleep(min(max(interval, 0.05), 0.5))


async def resolve_task(claimed: CreateTaskResult, ctx: ClaimContext) -> types.CallToolResult:
    """How a client finishes a task transparently: poll; answer input requests through the
    client's own callbacks (elicitation); return the completed task's CallToolResult."""
    while True:
        task = await poll(ctx.session, claimed.task_id, ("input_required",))
        if task.status == "input_required":
            responses: dict[str, Any] = {}
            for key, raw in (task.input_requests or {}).items():
                request = INPUT_REQUEST.validate_python(raw, by_name=False)
                rctx = ClientRequestContext(session=ctx.session, request_id=key, meta=None)
                answer = await ctx.session.dispatch_input_request(rctx, request)
                if isinstance(answer, types.ErrorData):
                    raise MCPError.from_error_data(answer)
                responses[key] = answer
            await tasks_update(ctx.session, claimed.task_id, responses)
            # The answer is taken: the task leaves input_required (or ends).
            await wait_left(ctx.session, claimed.task_id, "input_required")
            continue
        if task.status == "completed":
            return types.CallToolResult.model_validate(task.result, by_name=False)
        raise AssertionError(f"task {claimed.task_id} ended {task.status}: {task.error or task.status_message}")


async def wait_left(session: ClientSession, task_id: str, status: str) -> DetailedTask:
    deadline = time.monotonic() + TASK_DEADLINE_SECONDS
    while True:
        task = await tasks_get(session, task_id)
        if task.status != status:
            return task
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} still {status} after {TASK_DEADLINE_SECONDS}s")
        await anyio.sleep(0.1)


class Tasks(ClientExtension):
    """The tasks extension: advertised in the client's capabilities, and `resultType: "task"`
    claimed on tools/call (finished by `resolve_task` when called through `Client.call_tool`)."""

    identifier = TASKS

    def claims(self) -> list[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=CreateTaskResult, resolve=resolve_task)]


# ---- the checks ----


def leaf(error: BaseException) -> BaseException:
    """The first non-group exception inside anyio's task-group wrappers."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


class Checks:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.failed: list[str] = []
        self.elicited: list[types.ElicitRequestParams] = []

    def report(self, name: str, error: BaseException | None) -> None:
        if error is None:
            print(f"ok {name}", flush=True)
            return
        error = leaf(error)
        if isinstance(error, AssertionError):
            why = str(error)
        elif isinstance(error, MCPError):
            why = f"JSON-RPC error {error.code}: {error.error.message} (data: {error.error.data!r})"
        else:
            # The innermost frames say where the SDK gave up; its message says why.
            why = "".join(traceback.format_exception(error, limit=-4)).strip()
        print(f"FAIL {name}: {why}", flush=True)
        self.failed.append(name)

    async def check(self, name: str, fn: Any, *a: Any) -> Any:
        try:
            with anyio.fail_after(TASK_DEADLINE_SECONDS * 2):
                value = await fn(*a)
        except Exception as e:  # noqa: BLE001 - every failure is reported, then counted
            self.report(name, e)
            return None
        self.report(name, None)
        return value

    async def elicit(self, _ctx: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        # A person approves: the answer fits the flaky step's schema {"approved": bool}.
        self.elicited.append(params)
        return types.ElicitResult(action="accept", content={"approved": True})

    def client(self, http: httpx2.AsyncClient) -> Client:
        return Client(
            streamable_http_client(self.args.url, http_client=http),
            mode="auto",
            extensions=[Tasks()],
            elicitation_callback=self.elicit,
            read_timeout_seconds=READ_TIMEOUT_SECONDS,
            cache=None,
            client_info=types.Implementation(name="corral-tests-python", version="0"),
        )

    # -- one tenant's view --

    async def negotiated(self, c: Client) -> None:
        assert c.protocol_version == MODERN, f"negotiated {c.protocol_version}, want {MODERN} (stateless)"

    async def lists_tools(self, c: Client) -> dict[str, types.Tool]:
        tools: dict[str, types.Tool] = {}
        cursor = None
        for _ in range(100):
            page = await c.list_tools(cursor=cursor)
            for t in page.tools:
                assert t.name not in tools, f"{t.name} listed twice"
                tools[t.name] = t
            cursor = page.next_cursor
            if cursor is None:
                break
        want = set(self.args.expect_tools.split(",")) | {
            f"pipeline.{self.args.done_pipeline}",
            f"pipeline.{self.args.ask_pipeline}",
        }
        missing = sorted(want - set(tools))
        assert not missing, f"tools/list lacks {missing}; it has {sorted(tools)}"
        for name, t in tools.items():
            assert t.input_schema.get("type") == "object", f"{name}: inputSchema {t.input_schema}"
            assert t.description, f"{name} has no description"
        return tools

    async def calls_a_tool(self, c: Client) -> None:
        args = json.loads(self.args.tool_args)
        result = await c.call_tool(self.args.tool, args)
        assert not result.is_error, f"isError: {result.content}"
        want = json.loads(self.args.tool_expect)
        got = result.structured_content
        if got is None:
            # A tool without an output schema may answer in text only: its JSON.
            texts = [b.text for b in result.content if isinstance(b, types.TextContent)]
            assert texts, f"no structuredContent and no text: {result}"
            got = json.loads(texts[0])
        assert got == want, f"{self.args.tool}({args}) gave {got}, want {want}"

    async def guest_error_is_is_error(self, c: Client) -> None:
        result = await c.call_tool(self.args.error_tool, json.loads(self.args.error_args))
        assert result.is_error, f"a refused call is not isError: {result}"
        texts = [b.text for b in result.content if isinstance(b, types.TextContent)]
        assert texts and any(t.strip() for t in texts), f"isError without a message: {result}"

    async def unknown_tool_is_an_error(self, c: Client) -> None:
        try:
            result = await c.call_tool("no-such-tool-anywhere", {})
        except MCPError:
            return
        assert result.is_error, f"an unknown tool answered {result}"

    async def pipeline_completes_through_the_extension(self, c: Client) -> None:
        # Client.call_tool hands the task to the extension's resolver: the SDK's own path.
        args = {"from": "python", "n": 3, "nested": {"ok": True}}
        result = await c.call_tool(f"pipeline.{self.args.done_pipeline}", args)
        assert not result.is_error, f"isError: {result.content}"
        assert result.structured_content == args, f"output {result.structured_content}, want the input {args}"

    async def pipeline_is_a_task(self, c: Client) -> CreateTaskResult:
        claimed = await c.session.call_tool(
            f"pipeline.{self.args.done_pipeline}", {"direct": 1}, allow_claimed=True
        )
        assert isinstance(claimed, CreateTaskResult), f"tools/call on a pipeline answered {claimed!r}"
        assert claimed.status in ("working", "input_required", "completed"), claimed.status
        assert claimed.task_id.startswith("run_"), f"taskId {claimed.task_id} is not a run id"
        task = await poll(c.session, claimed.task_id, ())
        assert task.status == "completed", f"ended {task.status}: {task.error}"
        assert task.task_id == claimed.task_id
        result = types.CallToolResult.model_validate(task.result, by_name=False)
        assert not result.is_error, result
        assert result.structured_content == {"direct": 1}, result.structured_content
        # A finished task stays readable, unchanged.
        again = await tasks_get(c.session, claimed.task_id)
        assert again.status == "completed" and again.result == task.result, again
        return claimed

    async def start_ask(self, c: Client, args: dict[str, Any]) -> DetailedTask:
        claimed = await c.session.call_tool(f"pipeline.{self.args.ask_pipeline}", args, allow_claimed=True)
        assert isinstance(claimed, CreateTaskResult), f"tools/call on a pipeline answered {claimed!r}"
        task = await poll(c.session, claimed.task_id, ("input_required",))
        assert task.status == "input_required", f"the asking run went {task.status}: {task.error}"
        return task

    async def answers_an_input_request(self, c: Client) -> str:
        task = await self.start_ask(c, {"ask": "me"})
        requests = task.input_requests or {}
        assert len(requests) == 1, f"inputRequests {requests}"
        [(key, raw)] = requests.items()
        request = INPUT_REQUEST.validate_python(raw, by_name=False)
        assert isinstance(request, types.ElicitRequest), f"input request {raw} is not an elicitation"
        params = request.params
        assert isinstance(params, types.ElicitRequestFormParams), f"not a form elicitation: {raw}"
        assert params.message == self.args.question, f"message {params.message!r}"
        props = params.requested_schema.get("properties", {})
        assert props.get("approved", {}).get("type") == "boolean", f"requestedSchema {params.requested_schema}"
        # Still the same question when asked again (the state is stored, not per request).
        again = await tasks_get(c.session, task.task_id)
        assert again.status == "input_required" and again.input_requests == task.input_requests, again
        await tasks_update(
            c.session, task.task_id, {key: types.ElicitResult(action="accept", content={"approved": True})}
        )
        done = await poll(c.session, task.task_id, ())
        assert done.status == "completed", f"after the answer: {done.status} {done.error}"
        result = types.CallToolResult.model_validate(done.result, by_name=False)
        out = result.structured_content
        assert isinstance(out, dict) and out.get("answer") == {"approved": True}, f"output {out}"
        assert out.get("input") == {"ask": "me"}, f"output {out}"
        return task.task_id

    async def answers_through_the_elicitation_callback(self, c: Client) -> None:
        before = len(self.elicited)
        result = await c.call_tool(f"pipeline.{self.args.ask_pipeline}", {"via": "callback"})
        assert len(self.elicited) == before + 1, "the elicitation callback was not asked"
        assert self.elicited[-1].message == self.args.question
        out = result.structured_content
        assert isinstance(out, dict) and out.get("answer") == {"approved": True}, f"output {out}"

    async def cancels_a_task(self, c: Client, other: Client) -> None:
        task = await self.start_ask(c, {"to": "cancel"})
        # Another tenant can neither cancel it nor answer it, nor even see it.
        for what, call in (
            ("tasks/cancel", lambda: tasks_cancel(other.session, task.task_id)),
            ("tasks/get", lambda: tasks_get(other.session, task.task_id)),
            (
                "tasks/update",
                lambda: tasks_update(
                    other.session,
                    task.task_id,
                    {k: types.ElicitResult(action="accept", content={"approved": True}) for k in task.input_requests or {}},
                ),
            ),
        ):
            try:
                answer = await call()
            except MCPError:
                continue
            raise AssertionError(f"another tenant's {what} of {task.task_id} answered {answer!r}")
        still = await tasks_get(c.session, task.task_id)
        assert still.status == "input_required", f"after the other tenant tried: {still.status}"
        await tasks_cancel(c.session, task.task_id)
        ended = await poll(c.session, task.task_id, ())
        assert ended.status == "cancelled", f"after tasks/cancel: {ended.status}"
        # Cancelled is final: an answer now is refused, and the task stays cancelled.
        try:
            await tasks_update(
                c.session,
                task.task_id,
                {k: types.ElicitResult(action="accept", content={"approved": True}) for k in task.input_requests or {}},
            )
        except MCPError:
            pass
        final = await tasks_get(c.session, task.task_id)
        assert final.status == "cancelled", f"an answer after the cancel: {final.status}"

    async def unknown_task_is_an_error(self, c: Client) -> None:
        try:
            answer = await tasks_get(c.session, "run_doesnotexist")
        except MCPError:
            return
        raise AssertionError(f"tasks/get of an unknown task answered {answer!r}")

    async def oversized_arguments_are_refused(self, c: Client) -> None:
        big = "x" * self.args.oversize_bytes
        for name in (self.args.tool, f"pipeline.{self.args.ask_pipeline}"):
            try:
                answer = await c.session.call_tool(name, {"text": big}, allow_claimed=True)
            except MCPError as e:
                assert e.code == types.INVALID_PARAMS, (
                    f"{name} with {len(big)} bytes: error {e.code} {e.error.message}, want invalid params"
                )
                continue
            raise AssertionError(f"{name} with {len(big)} bytes of arguments answered {answer!r}")
        # The server still answers after refusing them.
        await self.calls_a_tool(c)

    # -- the other tenant's view --

    async def other_tenant_sees_nothing(self, other: Client, mine: dict[str, types.Tool], task_id: str) -> None:
        page = await other.list_tools()
        theirs = {t.name for t in page.tools}
        leaked = sorted(theirs & set(mine))
        assert not leaked, f"another tenant lists {leaked}"
        for name in (self.args.tool, f"pipeline.{self.args.done_pipeline}"):
            try:
                result = await other.session.call_tool(name, json.loads(self.args.tool_args), allow_claimed=True)
            except MCPError:
                continue
            assert isinstance(result, types.CallToolResult) and result.is_error, (
                f"another tenant's call of {name} answered {result!r}"
            )
        try:
            answer = await tasks_get(other.session, task_id)
        except MCPError:
            return
        raise AssertionError(f"another tenant's tasks/get of a finished task answered {answer!r}")

    async def bad_tokens_get_401(self) -> None:
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {}}}
        for headers in ({}, {"Authorization": "Bearer crl_not_a_real_token"}, {"Authorization": "Basic eDp5"}):
            # A connection of its own each: refused before its body is read, the server may
            # close the connection, and a POST on a reused one would race that.
            async with httpx2.AsyncClient(timeout=READ_TIMEOUT_SECONDS) as raw:
                r = await raw.post(
                    self.args.url,
                    json=body,
                    headers={**headers, "Accept": "application/json, text/event-stream"},
                )
                assert r.status_code == 401, f"{headers or 'no token'}: HTTP {r.status_code} {r.text[:200]}"
        # The SDK, too, gets no connection with a wrong token.
        async with create_mcp_http_client(headers={"Authorization": "Bearer crl_not_a_real_token"}) as http:
            try:
                async with self.client(http) as c:
                    tools = await c.list_tools()
            except Exception as e:  # noqa: BLE001 - refused is what is wanted; anything else is not
                if isinstance(leaf(e), MCPError):
                    return
                raise
            raise AssertionError(f"a wrong token connected and listed {[t.name for t in tools.tools]}")

    async def run(self) -> int:
        a = self.args
        await self.check("a wrong or missing token gets HTTP 401", self.bad_tokens_get_401)
        async with (
            create_mcp_http_client(headers={"Authorization": f"Bearer {a.token}"}) as http,
            create_mcp_http_client(headers={"Authorization": f"Bearer {a.other_token}"}) as other_http,
        ):
            try:
                async with self.client(http) as c, self.client(other_http) as other:
                    await self.check(f"negotiates {MODERN}", self.negotiated, c)
                    tools = await self.check("tools/list has the tools and the pipelines", self.lists_tools, c)
                    await self.check(f"tools/call {a.tool}", self.calls_a_tool, c)
                    await self.check(f"tools/call {a.error_tool} refused by the guest is isError", self.guest_error_is_is_error, c)
                    await self.check("tools/call of an unknown tool is an error", self.unknown_tool_is_an_error, c)
                    claimed = await self.check(
                        f"pipeline.{a.done_pipeline} is a task, polled to completed", self.pipeline_is_a_task, c
                    )
                    await self.check(
                        f"pipeline.{a.done_pipeline} through Client.call_tool and the extension",
                        self.pipeline_completes_through_the_extension,
                        c,
                    )
                    await self.check(
                        f"pipeline.{a.ask_pipeline}: input_required, answered by tasks/update, completed",
                        self.answers_an_input_request,
                        c,
                    )
                    await self.check(
                        f"pipeline.{a.ask_pipeline} answered through the elicitation callback",
                        self.answers_through_the_elicitation_callback,
                        c,
                    )
                    await self.check("tasks/cancel cancels a waiting task", self.cancels_a_task, c, other)
                    await self.check("tasks/get of an unknown task is an error", self.unknown_task_is_an_error, c)
                    await self.check(
                        f"arguments of {a.oversize_bytes} bytes are refused as invalid params",
                        self.oversized_arguments_are_refused,
                        c,
                    )
                    if tools is not None and claimed is not None:
                        await self.check(
                            "another tenant's token sees none of it",
                            self.other_tenant_sees_nothing,
                            other,
                            tools,
                            claimed.task_id,
                        )
                    else:
                        self.report("another tenant's token sees none of it", AssertionError("not run: an earlier check failed"))
            except Exception as e:  # noqa: BLE001 - a failed connection is a failed check
                self.report("connect with the tenant's token", e)
        passed = "all" if not self.failed else f"{len(self.failed)} failed:"
        print(f"mcp python checks: {passed} {', '.join(self.failed)}".rstrip(), flush=True)
        return 1 if self.failed else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag in (
        "--url",
        "--token",
        "--other-token",
        "--tool",
        "--tool-args",
        "--tool-expect",
        "--error-tool",
        "--error-args",
        "--expect-tools",
        "--done-pipeline",
        "--ask-pipeline",
        "--question",
    ):
        p.add_argument(flag, required=True)
    p.add_argument("--oversize-bytes", type=int, required=True)
    args = p.parse_args()
    return anyio.run(Checks(args).run)


if __name__ == "__main__":
    sys.exit(main())
