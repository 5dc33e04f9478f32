"""Scripted WSGI apps and server behaviours for the property tests, played into a transcript.

An `AppScript` says what the app does (body kind, chunks, status line, when it calls `start_response`,
where and what it raises); a `ServerScript` says what the server does (how far it iterates, on which
thread; it always closes). `transcript` plays both with a `TranscriptServer` (the harness's `Server`
that also keeps one ordered list of all it saw) and returns the `Transcript`: every status and header
list received, every write and chunk, and every exception (its type, and whether it is the very object
the app raised). Comparing the transcripts of the bare and the wrapped app is the "invisible to the
server" guarantee.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from apps import HEADERS, Failures, Headers, Server, WeakEnviron, make_environ
from faults import HostileError
from typing_extensions import override

from otel_wsgi.types import OptExcInfo

BodyKind = Literal["list", "generator", "closing"]
RaisePlace = Literal["none", "call_before_start", "call_after_start", "chunk", "close"]
ErrorKind = Literal["plain", "hostile", "base"]
#: One thing the server saw: ("status", status, headers, exc_info given) / ("chunk", bytes) /
#: ("raised", where, exception type name, is it the app's own object).
Event = tuple[object, ...]


class Abort(BaseException):
    """A BaseException a scripted app raises (as `SystemExit` or `GreenletExit` would)."""


@dataclass(frozen=True)
class AppScript:
    body: BodyKind
    chunks: tuple[bytes, ...]
    status: str
    late_start: bool  # start_response on the first next() rather than in the call
    raise_at: RaisePlace
    raise_index: int  # with raise_at="chunk": the next() that raises (len(chunks): instead of the end)
    error: ErrorKind


@dataclass(frozen=True)
class ServerScript:
    iterate: int | None  # how many chunks the server asks for; None: all of them
    thread: bool  # iterate on another thread (then close on this one)


@dataclass
class ScriptedApp:
    """A WSGI app that follows its script; fresh for each run, so the counts are per run."""

    script: AppScript
    close_calls: int = 0
    raised: list[weakref.ref[BaseException]] = field(default_factory=list)

    def error(self) -> BaseException:
        kind = self.script.error
        exc: BaseException = (
            HostileError() if kind == "hostile" else Abort() if kind == "base" else Failures.AppError()
        )
        self.raised.append(weakref.ref(exc))
        return exc

    def start(self, start_response: StartResponse) -> None:
        start_response(self.script.status, list(HEADERS))

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        script = self.script
        if script.raise_at == "call_before_start":
            raise self.error()
        if not script.late_start:
            self.start(start_response)
        if script.raise_at == "call_after_start":
            raise self.error()
        if script.body == "list":
            return list(script.chunks)
        if script.body == "generator":
            return self.generate(start_response)
        return ClosingBody(self, start_response)

    def generate(self, start_response: StartResponse) -> Iterator[bytes]:
        try:
            if self.script.late_start:
                self.start(start_response)
            for index, chunk in enumerate((*self.script.chunks, None)):
                if self.script.raise_at == "chunk" and index == self.script.raise_index:
                    raise self.error()
                if chunk is not None:
                    yield chunk
        finally:
            self.close_calls += 1  # a generator's close() runs this; so does finishing it


class ClosingBody:
    """An iterable with `close` (PEP 3333), driven by the app's script."""

    def __init__(self, app: ScriptedApp, start_response: StartResponse) -> None:
        self.app, self.start_response, self.index = app, start_response, 0

    def __iter__(self) -> ClosingBody:
        return self

    def __next__(self) -> bytes:
        script = self.app.script
        if script.late_start and self.index == 0:
            self.app.start(self.start_response)
        if script.raise_at == "chunk" and self.index == script.raise_index:
            self.index += 1
            raise self.app.error()
        if self.index >= len(script.chunks):
            raise StopIteration
        self.index += 1
        return script.chunks[self.index - 1]

    def close(self) -> None:
        self.app.close_calls += 1
        if self.app.script.raise_at == "close":
            raise self.app.error()


@dataclass
class TranscriptServer(Server):
    """The harness's `Server`, also writing each status, write and chunk into one ordered transcript."""

    transcript: list[Event] = field(default_factory=list)

    @override
    def start_response(
        self, status: str, headers: Headers, exc_info: OptExcInfo | None = None, /
    ) -> Callable[[bytes], object]:
        self.transcript.append(("status", status, list(headers), exc_info is not None))
        return super().start_response(status, headers, exc_info)

    @override
    def write(self, data: bytes) -> None:
        self.transcript.append(("write", data))
        super().write(data)


@dataclass
class Transcript:
    """What one run left behind: the server's transcript and a weak reference to its environ."""

    events: list[Event]
    environ: weakref.ref[WeakEnviron]


def transcript(app: WSGIApplication, scripted: ScriptedApp, server: ServerScript) -> Transcript:
    """Play the server's half of PEP 3333 against `app` (the bare or wrapped `scripted`)."""
    recorder = TranscriptServer()
    events = recorder.transcript
    environ = WeakEnviron(make_environ())

    def raised(where: str, exc: BaseException) -> None:
        own = any(ref() is exc for ref in scripted.raised)
        events.append(("raised", where, type(exc).__name__, own))

    try:
        body = app(environ, recorder.start_response)
    except BaseException as exc:
        raised("call", exc)
        return Transcript(events, weakref.ref(environ))

    def iterate() -> None:
        taken = 0
        try:
            iterator = iter(body)
            while server.iterate is None or taken < server.iterate:
                events.append(("chunk", next(iterator)))
                taken += 1
        except StopIteration:
            pass
        except BaseException as exc:
            raised("iteration", exc)

    if server.thread:
        worker = threading.Thread(target=iterate)
        worker.start()
        worker.join()
    else:
        iterate()
    close = getattr(body, "close", None)
    if close is not None:
        try:
            close()
        except BaseException as exc:
            raised("close", exc)
    return Transcript(events, weakref.ref(environ))
