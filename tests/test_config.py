"""`Config`: validation on construction, its record shape, and every `Config.from_env` variable."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from otel_wsgi import Config

#: `Config` called with arbitrary (possibly ill-typed) keyword arguments, as a user's code might.
make_config: Callable[..., Config] = Config

#: Every variable `from_env` reads; cleared before the tests that read the process environment.
ALL_VARIABLES = (
    "OTEL_SEMCONV_STABILITY_OPT_IN",
    "OTEL_PYTHON_WSGI_EXCLUDED_URLS",
    "OTEL_PYTHON_EXCLUDED_URLS",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS",
    "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS",
    "OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS",
)

# The defaults the README documents (its configuration table and Privacy section).
DOCUMENTED_SANITIZE = ("authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key")
DOCUMENTED_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"}
)
DOCUMENTED_REDACT = frozenset({"AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"})


# --- defaults and the record's shape ---


def test_defaults_are_the_documented_ones() -> None:
    config = Config()
    assert config.semconv == "stable"
    assert config.excluded_urls == ()
    assert config.capture_request_headers == ()
    assert config.capture_response_headers == ()
    assert config.sanitize_headers == DOCUMENTED_SANITIZE
    assert config.known_methods == DOCUMENTED_METHODS
    assert config.capture_all_methods is False
    assert config.redact_query_params == DOCUMENTED_REDACT
    assert config.max_attribute_length == 4096
    assert config.body_size_metrics is False
    assert config.trust_remote_context is True
    assert config.forwarded_headers is False
    assert config.traceresponse is False


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.semconv = "old"  # type: ignore[misc]  # the point: assignment must fail at runtime
    assert config.semconv == "stable"


def test_config_is_slotted() -> None:
    config = Config()
    assert not hasattr(config, "__dict__")
    assert "semconv" in type(config).__slots__
    with pytest.raises((AttributeError, TypeError)):
        object.__setattr__(config, "not_a_field", 1)


def test_config_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        make_config("old")
    assert make_config(semconv="old").semconv == "old"


def test_equal_configs_compare_equal_and_hash_alike() -> None:
    first = Config(excluded_urls=("/health",), semconv="dup")
    second = Config(excluded_urls=("/health",), semconv="dup")
    assert first == second
    assert hash(first) == hash(second)
    assert first != Config(excluded_urls=("/ready",), semconv="dup")


def test_iterables_are_stored_immutable() -> None:
    config = make_config(
        excluded_urls=["/a", "/b"],
        capture_request_headers=["x-a"],
        known_methods=["GET", "PURGE"],
        redact_query_params={"token"},
    )
    assert config.excluded_urls == ("/a", "/b")
    assert config.capture_request_headers == ("x-a",)
    assert config.known_methods == frozenset({"GET", "PURGE"})
    assert isinstance(config.known_methods, frozenset)
    assert config.redact_query_params == frozenset({"token"})
    assert isinstance(config.redact_query_params, frozenset)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"semconv": "old"}, id="semconv-old"),
        pytest.param({"semconv": "dup"}, id="semconv-dup"),
        pytest.param({"max_attribute_length": 10}, id="length-minimum"),
        pytest.param({"known_methods": frozenset()}, id="no-known-methods"),
        pytest.param({"known_methods": frozenset({"M-SEARCH", "PROPFIND", "X.Y"})}, id="token-methods"),
        pytest.param({"excluded_urls": (r"^https?://[^/]+/health$", "/static/")}, id="regex-urls"),
        pytest.param({"capture_request_headers": ("x-.*", "content-type")}, id="regex-headers"),
        pytest.param({"sanitize_headers": ()}, id="no-sanitizing"),
        pytest.param(
            {
                "capture_all_methods": True,
                "body_size_metrics": True,
                "trust_remote_context": False,
                "forwarded_headers": True,
                "traceresponse": True,
            },
            id="all-flags-flipped",
        ),
    ],
)
def test_valid_values_are_kept(kwargs: dict[str, object]) -> None:
    config = make_config(**kwargs)
    for name, value in kwargs.items():
        assert getattr(config, name) == value


# --- validation: each bad value raises ValueError naming the field ---

INVALID_CASES = [
    # regexes
    pytest.param("excluded_urls", ("(unclosed",), id="excluded-bad-regex"),
    pytest.param("excluded_urls", ("/ok", "[z-a]"), id="excluded-bad-range"),
    pytest.param("capture_request_headers", ("*x",), id="request-headers-bad-regex"),
    pytest.param("capture_response_headers", ("x-(",), id="response-headers-bad-regex"),
    pytest.param("sanitize_headers", ("secret", "?"), id="sanitize-bad-regex"),
    # valid alone, but not inside one alternation
    pytest.param("excluded_urls", ("(?i)/health",), id="excluded-inline-global-flag"),
    pytest.param(
        "capture_request_headers", ("(?P<h>x-a)", "(?P<h>x-b)"), id="request-headers-same-group-name"
    ),
    # a plain str (or bytes, or a scalar) where a tuple of strings is expected
    pytest.param("excluded_urls", "/health", id="excluded-plain-str"),
    pytest.param("capture_request_headers", "x-a", id="request-headers-plain-str"),
    pytest.param("capture_response_headers", "x-a", id="response-headers-plain-str"),
    pytest.param("sanitize_headers", "authorization", id="sanitize-plain-str"),
    pytest.param("known_methods", "GET", id="methods-plain-str"),
    pytest.param("redact_query_params", "sig", id="redact-plain-str"),
    pytest.param("excluded_urls", b"/health", id="excluded-bytes"),
    pytest.param("excluded_urls", 42, id="excluded-int"),
    pytest.param("excluded_urls", None, id="excluded-none"),
    # items that are not non-empty strings
    pytest.param("excluded_urls", ("/a", 1), id="excluded-int-item"),
    pytest.param("capture_request_headers", ("",), id="request-headers-empty-item"),
    pytest.param("redact_query_params", frozenset({b"sig"}), id="redact-bytes-item"),
    # semconv
    pytest.param("semconv", "new", id="semconv-unknown"),
    pytest.param("semconv", "OLD", id="semconv-wrong-case"),
    pytest.param("semconv", "http/dup", id="semconv-env-token"),
    pytest.param("semconv", None, id="semconv-none"),
    # max_attribute_length
    pytest.param("max_attribute_length", 0, id="length-zero"),
    # below the longest value the middleware writes itself (`[REDACTED]`, 10 characters)
    pytest.param("max_attribute_length", 1, id="length-one"),
    pytest.param("max_attribute_length", 9, id="length-below-the-minimum"),
    pytest.param("max_attribute_length", -1, id="length-negative"),
    pytest.param("max_attribute_length", True, id="length-bool"),
    pytest.param("max_attribute_length", 10.0, id="length-float"),
    pytest.param("max_attribute_length", "10", id="length-str"),
    # flags
    pytest.param("capture_all_methods", 1, id="capture-all-int"),
    pytest.param("capture_all_methods", "true", id="capture-all-str"),
    pytest.param("body_size_metrics", None, id="body-size-none"),
    pytest.param("trust_remote_context", 0, id="trust-int"),
    pytest.param("forwarded_headers", "yes", id="forwarded-str"),
    pytest.param("traceresponse", 1, id="traceresponse-int"),
    # method tokens (RFC 9110 section 5.6.2)
    pytest.param("known_methods", frozenset({"GE T"}), id="method-space"),
    pytest.param("known_methods", frozenset({"GET\r\n"}), id="method-crlf"),
    pytest.param("known_methods", frozenset({"GÉT"}), id="method-non-ascii"),
    pytest.param("known_methods", frozenset({"GET", "(GET)"}), id="method-separator"),
    pytest.param("known_methods", frozenset({""}), id="method-empty"),
]


@pytest.mark.parametrize(("field", "value"), INVALID_CASES)
def test_invalid_value_raises_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        make_config(**{field: value})


# --- Config.from_env ---

FROM_ENV_CASES = [
    # OTEL_SEMCONV_STABILITY_OPT_IN
    pytest.param({}, "semconv", "stable", id="semconv-unset"),
    pytest.param({"OTEL_SEMCONV_STABILITY_OPT_IN": ""}, "semconv", "stable", id="semconv-empty"),
    pytest.param({"OTEL_SEMCONV_STABILITY_OPT_IN": "http"}, "semconv", "stable", id="semconv-http"),
    pytest.param({"OTEL_SEMCONV_STABILITY_OPT_IN": "http/dup"}, "semconv", "dup", id="semconv-http-dup"),
    pytest.param({"OTEL_SEMCONV_STABILITY_OPT_IN": "http,http/dup"}, "semconv", "dup", id="semconv-both"),
    pytest.param({"OTEL_SEMCONV_STABILITY_OPT_IN": "http/dup,http"}, "semconv", "dup", id="semconv-both-rev"),
    pytest.param(
        {"OTEL_SEMCONV_STABILITY_OPT_IN": " database , http/dup ,"}, "semconv", "dup", id="semconv-spaced"
    ),
    pytest.param(
        {"OTEL_SEMCONV_STABILITY_OPT_IN": "database/dup"}, "semconv", "stable", id="semconv-other-dup"
    ),
    pytest.param({"OTEL_SEMCONV_STABILITY_OPT_IN": "junk,,x"}, "semconv", "stable", id="semconv-junk"),
    pytest.param({"OTEL_SEMCONV_STABILITY_OPT_IN": "http/dupx"}, "semconv", "stable", id="semconv-near-miss"),
    # OTEL_PYTHON_WSGI_EXCLUDED_URLS, else OTEL_PYTHON_EXCLUDED_URLS
    pytest.param({}, "excluded_urls", (), id="excluded-unset"),
    pytest.param(
        {"OTEL_PYTHON_WSGI_EXCLUDED_URLS": " /health ,, /ready$ , "},
        "excluded_urls",
        ("/health", "/ready$"),
        id="excluded-wsgi-blanks-spaces",
    ),
    pytest.param(
        {"OTEL_PYTHON_EXCLUDED_URLS": "/a,/b"}, "excluded_urls", ("/a", "/b"), id="excluded-generic-only"
    ),
    pytest.param(
        {"OTEL_PYTHON_WSGI_EXCLUDED_URLS": "/wsgi", "OTEL_PYTHON_EXCLUDED_URLS": "/generic"},
        "excluded_urls",
        ("/wsgi",),
        id="excluded-wsgi-wins",
    ),
    pytest.param(
        {"OTEL_PYTHON_WSGI_EXCLUDED_URLS": "", "OTEL_PYTHON_EXCLUDED_URLS": "/generic"},
        "excluded_urls",
        (),
        id="excluded-wsgi-empty-wins",
    ),
    pytest.param(
        {"OTEL_PYTHON_WSGI_EXCLUDED_URLS": " , ", "OTEL_PYTHON_EXCLUDED_URLS": "/generic"},
        "excluded_urls",
        (),
        id="excluded-wsgi-blank-wins",
    ),
    # header capture lists
    pytest.param(
        {"OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "content-type, X-Custom ,,x-.*, "},
        "capture_request_headers",
        ("content-type", "X-Custom", "x-.*"),
        id="request-headers",
    ),
    pytest.param(
        {"OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": ""},
        "capture_request_headers",
        (),
        id="request-headers-empty",
    ),
    pytest.param(
        {"OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE": " set-cookie ,Content-Length"},
        "capture_response_headers",
        ("set-cookie", "Content-Length"),
        id="response-headers",
    ),
    pytest.param(
        {"OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE": ",,"},
        "capture_response_headers",
        (),
        id="response-headers-blanks",
    ),
    pytest.param(
        {"OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "x-a"},
        "capture_response_headers",
        (),
        id="request-var-leaves-response",
    ),
    # sanitize: appended to the defaults
    pytest.param({}, "sanitize_headers", DOCUMENTED_SANITIZE, id="sanitize-unset"),
    pytest.param(
        {"OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS": ""},
        "sanitize_headers",
        DOCUMENTED_SANITIZE,
        id="sanitize-empty",
    ),
    pytest.param(
        {"OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS": " x-secret ,, session.* "},
        "sanitize_headers",
        (*DOCUMENTED_SANITIZE, "x-secret", "session.*"),
        id="sanitize-appended",
    ),
    # known methods: replace the set
    pytest.param({}, "known_methods", DOCUMENTED_METHODS, id="methods-unset"),
    pytest.param(
        {"OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS": "GET, PURGE ,,"},
        "known_methods",
        frozenset({"GET", "PURGE"}),
        id="methods-replaced",
    ),
    pytest.param(
        {"OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS": "PROPFIND"},
        "known_methods",
        frozenset({"PROPFIND"}),
        id="methods-replaced-no-get",
    ),
    pytest.param(
        {"OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS": ""},
        "known_methods",
        DOCUMENTED_METHODS,
        id="methods-empty",
    ),
    # capture all methods
    pytest.param({}, "capture_all_methods", False, id="capture-all-unset"),
    *(
        pytest.param(
            {"OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS": raw},
            "capture_all_methods",
            expected,
            id=f"capture-all-{raw.strip() or 'empty'}-{expected}",
        )
        for raw, expected in (
            ("true", True),
            ("True", True),
            (" TRUE ", True),
            ("1", True),
            ("false", False),
            ("FALSE", False),
            ("0", False),
            ("", False),
        )
    ),
]


@pytest.mark.parametrize(("env", "field", "expected"), FROM_ENV_CASES)
def test_from_env_reads_the_variable(env: dict[str, str], field: str, expected: object) -> None:
    config = Config.from_env(env)
    assert getattr(config, field) == expected
    assert type(getattr(config, field)) is type(expected)


def test_from_env_sets_every_field_at_once() -> None:
    config = Config.from_env(
        {
            "OTEL_SEMCONV_STABILITY_OPT_IN": "http/dup",
            "OTEL_PYTHON_EXCLUDED_URLS": "/health",
            "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "x-a",
            "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE": "x-b",
            "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS": "x-c",
            "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS": "GET",
            "OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS": "1",
            "UNRELATED": "ignored",
        }
    )
    assert config == Config(
        semconv="dup",
        excluded_urls=("/health",),
        capture_request_headers=("x-a",),
        capture_response_headers=("x-b",),
        sanitize_headers=(*DOCUMENTED_SANITIZE, "x-c"),
        known_methods=frozenset({"GET"}),
        capture_all_methods=True,
    )


def test_from_env_with_nothing_set_is_the_default() -> None:
    assert Config.from_env({}) == Config()
    assert Config.from_env({"PATH": "/bin", "OTEL_SERVICE_NAME": "x"}) == Config()


ALL_METHODS_VAR = "OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS"
KNOWN_METHODS_VAR = "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS"
JUNK_CASES = [
    pytest.param(ALL_METHODS_VAR, "yes", "capture_all_methods", id="all-yes"),
    pytest.param(ALL_METHODS_VAR, "2", "capture_all_methods", id="all-2"),
    pytest.param(ALL_METHODS_VAR, "on", "capture_all_methods", id="all-on"),
    pytest.param(KNOWN_METHODS_VAR, "GET, G T", "known_methods", id="methods-space"),
    pytest.param(KNOWN_METHODS_VAR, "GET,(x)", "known_methods", id="methods-separator"),
    pytest.param("OTEL_PYTHON_WSGI_EXCLUDED_URLS", "/ok,(", "excluded_urls", id="wsgi-excluded-regex"),
    pytest.param("OTEL_PYTHON_EXCLUDED_URLS", "[", "excluded_urls", id="generic-excluded-regex"),
    pytest.param(
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
        "x-a,*",
        "capture_request_headers",
        id="request-headers-regex",
    ),
    pytest.param(
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE",
        "x-(",
        "capture_response_headers",
        id="response-headers-regex",
    ),
    pytest.param(
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS",
        "+x",
        "sanitize_headers",
        id="sanitize-regex",
    ),
]


@pytest.mark.parametrize(("variable", "raw", "field"), JUNK_CASES)
def test_from_env_junk_names_field_and_variable(variable: str, raw: str, field: str) -> None:
    with pytest.raises(ValueError) as info:
        Config.from_env({variable: raw})
    message = str(info.value)
    assert field in message
    assert variable in message


def test_from_env_reports_the_variable_that_was_read() -> None:
    # The generic variable is shadowed by the WSGI one: its junk is never read.
    config = Config.from_env({"OTEL_PYTHON_WSGI_EXCLUDED_URLS": "/ok", "OTEL_PYTHON_EXCLUDED_URLS": "("})
    assert config.excluded_urls == ("/ok",)
    with pytest.raises(ValueError, match="OTEL_PYTHON_WSGI_EXCLUDED_URLS"):
        Config.from_env({"OTEL_PYTHON_WSGI_EXCLUDED_URLS": "(", "OTEL_PYTHON_EXCLUDED_URLS": "/ok"})


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for variable in ALL_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


def test_from_env_defaults_to_the_process_environment(clean_environ: pytest.MonkeyPatch) -> None:
    assert Config.from_env() == Config()
    clean_environ.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http/dup")
    clean_environ.setenv("OTEL_PYTHON_EXCLUDED_URLS", "/health, /ready")
    clean_environ.setenv("OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS", "true")
    config = Config.from_env()
    assert config.semconv == "dup"
    assert config.excluded_urls == ("/health", "/ready")
    assert config.capture_all_methods is True


def test_from_env_process_environment_junk_raises(clean_environ: pytest.MonkeyPatch) -> None:
    clean_environ.setenv("OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS", "maybe")
    with pytest.raises(ValueError, match="OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS"):
        Config.from_env()


def test_from_env_explicit_mapping_ignores_the_process_environment(clean_environ: pytest.MonkeyPatch) -> None:
    clean_environ.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http/dup")
    assert Config.from_env({}).semconv == "stable"
