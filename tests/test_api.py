"""The API layer, sans I/O: config, URLs, headers, requests and the reply parsers."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridgen import Config, ConfigError, FileStatus, ImageRequest, RequestError, TransientError
from hybridgen.api import (
    REASON_CHARS,
    USER_AGENT,
    ModelInfo,
    Push,
    error_reason,
    parse_file,
    parse_file_list,
    parse_generation_configs,
    parse_poll_reply,
    parse_push,
    parse_start_reply,
    parse_ws_message,
    status_phrase,
    subscribe_message,
    ws_path,
)

TOKEN = "tok-SECRET-0123456789"


def test_config_from_env_and_urls() -> None:
    config = Config.from_env(
        {"SUPERDUPERAI_URL": " https://editor.example.com/ ", "SUPERDUPERAI_TOKEN": TOKEN}
    )
    assert config.url == "https://editor.example.com"
    assert config.api_url("/api/v1/file/x") == "https://editor.example.com/api/v1/file/x"
    assert config.ws_url(ws_path("p1")) == "wss://editor.example.com/api/v1/ws/project.p1"
    local = Config(url="http://127.0.0.1:8000", token=TOKEN)
    assert local.ws_url("/a") == "ws://127.0.0.1:8000/a"
    headers = config.headers()
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == USER_AGENT and USER_AGENT.startswith("hybridgen/")


def test_token_never_shows() -> None:
    config = Config(url="https://e.example.com", token=TOKEN)
    assert TOKEN not in repr(config) and TOKEN not in str(config)
    assert TOKEN not in repr(config.token)


@pytest.mark.parametrize(
    ("env", "field", "words"),
    [
        ({"SUPERDUPERAI_TOKEN": TOKEN}, "SUPERDUPERAI_URL", "not set"),
        ({"SUPERDUPERAI_URL": "https://e.example.com"}, "SUPERDUPERAI_TOKEN", "not set"),
        (
            {"SUPERDUPERAI_URL": "https://e.example.com", "SUPERDUPERAI_TOKEN": " "},
            "SUPERDUPERAI_TOKEN",
            "empty",
        ),
        (
            {"SUPERDUPERAI_URL": "https://e.example.com", "SUPERDUPERAI_TOKEN": "a b"},
            "SUPERDUPERAI_TOKEN",
            "characters",
        ),
        (
            {"SUPERDUPERAI_URL": "editor.example.com", "SUPERDUPERAI_TOKEN": TOKEN},
            "SUPERDUPERAI_URL",
            "https://",
        ),
        (
            {"SUPERDUPERAI_URL": "ftp://e.example.com", "SUPERDUPERAI_TOKEN": TOKEN},
            "SUPERDUPERAI_URL",
            "https://",
        ),
        ({"SUPERDUPERAI_URL": "https://", "SUPERDUPERAI_TOKEN": TOKEN}, "SUPERDUPERAI_URL", "host"),
        (
            {"SUPERDUPERAI_URL": "https://e.example.com/a b", "SUPERDUPERAI_TOKEN": TOKEN},
            "SUPERDUPERAI_URL",
            "white space",
        ),
        (
            {"SUPERDUPERAI_URL": "http://e.example.com", "SUPERDUPERAI_TOKEN": TOKEN},
            "SUPERDUPERAI_URL",
            "set HYBRIDGEN_ALLOW_INSECURE=1",
        ),
        (
            {"SUPERDUPERAI_URL": "https://e.example.com/api", "SUPERDUPERAI_TOKEN": TOKEN},
            "SUPERDUPERAI_URL",
            "without a path (/api): hybridgen adds /api/v1/... itself; set it to "
            "https://e.example.com",
        ),
        (
            {"SUPERDUPERAI_URL": "https://e.example.com/api/v1/", "SUPERDUPERAI_TOKEN": TOKEN},
            "SUPERDUPERAI_URL",
            "(/api/v1)",
        ),
    ],
)
def test_bad_config_is_a_typed_error_naming_the_variable(
    env: dict[str, str], field: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env(env)
    assert info.value.field == field
    assert words in str(info.value)
    assert "0123456789" not in str(info.value)


def test_the_insecure_hint_fits_how_the_config_was_given() -> None:
    """The environment's user sets a variable; a library user passes an argument."""
    with pytest.raises(ConfigError) as info:
        Config(url="http://e.example.com", token=TOKEN)
    assert "pass allow_insecure=True" in str(info.value)
    with pytest.raises(ConfigError) as info:
        Config.from_env({"SUPERDUPERAI_URL": "http://e.example.com", "SUPERDUPERAI_TOKEN": TOKEN})
    assert "allow_insecure=True" not in str(info.value)


def test_insecure_http_can_be_allowed() -> None:
    env = {
        "SUPERDUPERAI_URL": "http://e.example.com",
        "SUPERDUPERAI_TOKEN": TOKEN,
        "HYBRIDGEN_ALLOW_INSECURE": "1",
    }
    assert Config.from_env(env).url == "http://e.example.com"


def test_request_body_has_todays_documented_shape() -> None:
    request = ImageRequest(prompt="a red fox", seed=42, width=1024, height=768, style_name="anime")
    body = request.to_json()
    assert set(body) == {"project_id", "config"}
    config = body["config"]
    assert config["prompt"] == "a red fox"
    assert config["generation_config_name"] == "comfyui/flux"
    params = config["params"]
    assert params["width"] == 1024 and params["height"] == 768 and params["seed"] == 42
    assert all(type(params[k]) is int for k in ("width", "height", "seed", "batch_size"))
    assert params["quality"] == "hd" and params["style"] == "anime"
    assert params["shot_size"] == "medium-shot"
    json.dumps(body)


def test_request_body_legacy_form_has_the_seed_clients_shape() -> None:
    request = ImageRequest(prompt="a red fox", seed=42, width=1024, height=768, body_form="legacy")
    body = request.to_json()
    assert body["type"] == "media" and body["template_name"] is None
    assert body["project_id"] == request.project_id
    config = body["config"]
    assert config["prompt"] == "a red fox"
    assert config["seed"] == "42" and config["width"] == "1024" and config["height"] == "768"
    assert config["aspecRatio"] == config["aspect_ratio"] == "1:1"
    assert config["generation_config_name"] == "comfyui/flux"
    assert config["entity_ids"] == [] and config["references"] == []
    json.dumps(body)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 5000}, "prompt"),
        ({"prompt": "bad \ud800 surrogate"}, "prompt"),
        ({"prompt": "bell \x07"}, "prompt"),
        ({"prompt": "ok", "seed": -1}, "seed"),
        ({"prompt": "ok", "seed": 2**60}, "seed"),
        ({"prompt": "ok", "width": 0}, "width"),
        ({"prompt": "ok", "height": 10_000}, "height"),
        ({"prompt": "ok", "project_id": "not-a-uuid"}, "project_id"),
        ({"prompt": "ok", "model": "no spaces allowed"}, "model"),
        ({"prompt": "ok", "aspect_ratio": "wide"}, "aspect_ratio"),
        ({"prompt": "ok", "quality": "4k"}, "quality"),
        ({"prompt": "ok", "batch_size": 0}, "batch_size"),
        ({"prompt": "ok", "body_form": "flat"}, "body_form"),
    ],
)
def test_bad_request_is_a_typed_error_naming_the_field(
    kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(RequestError) as info:
        ImageRequest(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_parsers() -> None:
    assert parse_file({"id": "f", "url": None}).ready is False
    assert parse_file({"id": "f", "url": ""}).ready is False
    assert parse_file({"id": "f", "url": "http://x"}).url == "http://x"
    failed = parse_file({"id": "f", "url": None, "tasks": [{"status": "error", "error": "boom"}]})
    assert failed.failed and failed.error == "boom"
    assert parse_file_list([{"id": 7}]).id == "7"
    push = parse_ws_message(json.dumps({"type": "file", "object": {"id": "f", "url": "u"}}))
    assert push is not None and push.url == "u"
    progress = parse_ws_message(
        '{"type": "render_progress", "object": {"file_id": "f", "progress": 40}}'
    )
    assert progress is not None and progress.progress == pytest.approx(0.4)
    assert parse_ws_message('{"type": "task", "object": {}}') is None
    assert parse_ws_message('{"type": "mystery"}') is None
    assert json.loads(subscribe_message("p")) == {"type": "subscribe", "projectId": "project.p"}
    for bad in ("{", "[]", '"x"'):
        with pytest.raises(TransientError):
            parse_ws_message(bad)
    for bad_file in (None, [], {"url": "u"}, {"id": "f", "url": 3}):
        with pytest.raises(TransientError):
            parse_file(bad_file)
    with pytest.raises(TransientError):
        parse_file_list([])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
FILE_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "id": st.none() | st.text(max_size=5) | st.integers(),
        "url": JSON,
        "tasks": JSON
        | st.lists(st.fixed_dictionaries({"status": st.sampled_from(["error", "completed", 3])})),
        "progress": JSON,
    },
)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200)
    | st.text(max_size=200)
    | JSON.map(json.dumps)
    | st.fixed_dictionaries(
        {"type": st.sampled_from(["file", "render_progress", "x"]), "object": FILE_LIKE | JSON}
    ).map(json.dumps)
)
def test_ws_parser_only_ignores_or_raises_typed_errors(raw: str | bytes) -> None:
    try:
        result = parse_ws_message(raw)
    except TransientError:
        return
    assert result is None or (isinstance(result, FileStatus) and result.id)


@settings(max_examples=300, deadline=None)
@given(JSON | FILE_LIKE | st.lists(FILE_LIKE, max_size=2))
def test_file_parsers_only_raise_typed_errors(data: object) -> None:
    for parse in (parse_file, parse_file_list):
        try:
            status = parse(data)
        except TransientError:
            continue
        assert isinstance(status.id, str) and status.id
        assert status.url is None or isinstance(status.url, str)
        assert status.progress is None or 0 <= status.progress <= 1


def test_generation_configs_parse_leniently_but_never_invent_names() -> None:
    body = {
        "items": [
            {"name": "comfyui/flux", "label": "Flux", "type": "text_to_image", "params": {}},
            {"name": "x/y", "params": {"price": 3}, "vip_required": True},
            {"label": "no name"},
            {"name": "has space"},
            "not an object",
        ]
    }
    models = parse_generation_configs(body)
    assert [m.name for m in models] == ["comfyui/flux", "x/y"]
    assert models[0] == ModelInfo("comfyui/flux", "Flux", "text_to_image", None, False)
    assert (models[1].price, models[1].vip, models[1].label) == (3.0, True, "")
    with pytest.raises(TransientError):
        parse_generation_configs({"detail": "nope"})


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 100_000 + "]" * 100_000,  # nesting deeper than the recursion limit
        '{"type": "render_progress", "object": {"file_id": "f", "progress": ' + "9" * 400 + "}}",
        '{"type": "render_progress", "object": {"file_id": "f", "progress": 1e999}}',
        '{"type": "render_progress", "object": {"file_id": "f", "progress": ' + "9" * 5000 + "}}",
        b'{"type": "render_result", "object": {"file_id": "f", "url": "\xff"}}',
        '{"type": "render_result", "object": {"file_id": "f", "url": 7}}',
        '{"type": "render_result", "object": [1]}',
        '{"type": "file", "object": {"url": "u"}}',
    ],
    ids=["deep", "huge-int", "inf", "too-many-digits", "bad-utf8", "url-int", "obj-list", "no-id"],
)
def test_every_malformed_push_is_a_typed_error(raw: str | bytes) -> None:
    with pytest.raises(TransientError, match="malformed"):
        parse_push(raw)


def test_push_messages_of_today() -> None:
    def push(kind: str, **obj: object) -> Push | None:
        return parse_push(json.dumps({"type": kind, "object": obj}))

    assert push("render_result", file_id=5, url="http://cdn/x.webp") == Push(
        "5", "result", url="http://cdn/x.webp"
    )
    assert push("render_result", file_id="f", url=None) == Push("f", "completed")
    assert push("render_progress", file_id="f", progress=45) == Push("f", "progress", progress=0.45)
    assert push("task", id="t", file_id="f", status="error", error="GPU") == Push(
        "f", "failed", reason="GPU", status="error"
    )
    assert push("task", id="t", file_id="f", status="completed") == Push("f", "completed")
    assert push("task", id="t", file_id="f", status="in_progress") is None
    assert push("task", id="t", status="error") is None  # whose? a task's id is not a file id
    assert push("entity", id="x") is None


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["render_result", "render_progress", "task", "file"]),
            "object": st.fixed_dictionaries(
                {},
                optional={
                    "file_id": JSON,
                    "id": JSON,
                    "url": JSON,
                    "progress": JSON | st.integers(min_value=10**300),
                    "status": st.sampled_from(["error", "completed", "in_progress"]) | JSON,
                },
            )
            | JSON,
        }
    ).map(json.dumps)
)
def test_push_parser_only_ignores_or_raises_typed_errors(raw: str) -> None:
    try:
        push = parse_push(raw)
    except TransientError:
        return
    assert push is None or (isinstance(push, Push) and push.file_id)


def test_todays_replies_parse() -> None:
    running = {
        "id": 1234,
        "url": None,
        "thumbnail_url": "https://cdn.example.com/t/1234.webp",
        "type": "image",
        "image_generation_id": 99,
        "image_generation": {"prompt": "a fox", "width": 1024, "seed": 3},
        "video_generation": None,
        "video_generation_id": None,
        "tasks": [{"type": "image-generation-flow", "status": "in_progress", "id": 5}],
    }
    status = parse_file_list([running])
    assert status.id == "1234" and not status.ready and not status.failed  # a thumbnail only
    assert parse_file_list(running) == status  # a single object, as some endpoints answer
    done = parse_file({**running, "url": "https://cdn.example.com/1234.webp", "tasks": []})
    assert done.ready and done.url == "https://cdn.example.com/1234.webp"
    failed = parse_file(
        {
            **running,
            "tasks": [
                {"status": "completed", "id": 4},
                {"status": "error", "id": 5, "error": "NSFW \x1b[31mcontent\n detected"},
            ],
        }
    )
    assert failed.failed and failed.error == "NSFW [31mcontent detected"


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"id": "f", "progress": ' + b"9" * 400 + b"}",
        b'{"id": "f", "progress": 1' + b"0" * 5000 + b"}",
        b'{"id": "' + b"7" * 5000 + b'"}',
        b'{"id": ' + b"7" * 400 + b"}",
        b'{"id": "f", "url": "' + b"u" * 100_000 + b'"}',
        b'{"id": "f", "tasks": [{"status": "error", "error": ' + b"[" * 5000 + b"]" * 5000 + b"}]}",
        b"\xff\xfe not utf-8",
        b"",
    ],
    ids=[
        "deep",
        "progress-400-digits",
        "progress-5000-digits",
        "long-id",
        "id-400-digits",
        "long-url",
        "deep-error",
        "bytes",
        "empty",
    ],
)
def test_hostile_replies_are_malformed_transient_errors(body: bytes) -> None:
    for parse in (parse_poll_reply, parse_start_reply):
        status = outcome(parse, body)
        if isinstance(status, TransientError):
            assert "malformed" in str(status)
            assert len(str(status)) < 400
            continue
        # What parses is sane: a 400-digit progress is ignored, not an overflow.
        assert status.progress is None and status.id
        assert not status.ready or len(status.url or "") <= 16_384


def outcome(parse: Callable[[bytes], FileStatus], body: bytes) -> FileStatus | TransientError:
    """What ``parse(body)`` gives: a status or the typed error (any other error fails the test)."""
    try:
        return parse(body)
    except TransientError as exc:
        return exc


def test_a_400_digit_progress_is_ignored() -> None:
    status = parse_poll_reply(b'{"id": "f", "progress": ' + b"9" * 400 + b"}")
    assert status.id == "f" and status.progress is None


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (
            b'{"detail": [{"loc": ["body", "config", "prompt"], "msg": "field required",'
            b' "type": "value_error.missing"}]}',
            "application/json",
            "config.prompt: field required",
        ),
        (
            b'{"detail": [{"loc": ["body", "config", "prompt"], "msg": "field required"},'
            b' {"loc": ["body", "config", "params", "width"], "msg": "not an integer"}]}',
            "application/json",
            "config.prompt: field required; config.params.width: not an integer",
        ),
        (b'{"detail": "Integrity error, create"}', "application/json", "Integrity error, create"),
        (b"<!DOCTYPE html><html>" + b"<p>x</p>" * 10_000, "text/html", ""),
        (b"<html><body>502</body></html>", None, ""),
        (b"plain words\n\nand more", "text/plain", "plain words and more"),
        (b"", None, ""),
        (b'{"message": "quota exceeded"}', "application/json", "quota exceeded"),
    ],
)
def test_error_reasons_a_person_can_read(
    body: bytes, content_type: str | None, reason: str
) -> None:
    assert error_reason(body, content_type) == reason


def test_error_reasons_are_capped() -> None:
    long_reason = error_reason(json.dumps({"detail": "x" * 100_000}).encode())
    assert len(long_reason) == REASON_CHARS and long_reason.endswith("...")
    assert status_phrase(524) == "Cloudflare origin timeout"
    assert status_phrase(429) == "Too Many Requests"
    assert status_phrase(799) == ""


HUGE = st.one_of(
    st.integers(min_value=10**300, max_value=10**4000),
    st.integers(max_value=-(10**300), min_value=-(10**4000)),
    st.tuples(st.text(min_size=1, max_size=8), st.integers(2_000, 100_000)).map(
        lambda t: t[0] * t[1]
    ),
    st.integers(min_value=1000, max_value=30_000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=1000, max_value=30_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["id", "url", "progress", "tasks", "thumbnail_url", "image_generation"]),
    HUGE,
    st.booleans(),
)
def test_hostile_fields_only_raise_typed_errors(field: str, value: object, raw: bool) -> None:
    """Huge numbers, huge strings and deep nesting in any field: a typed error or a sane status."""
    inner = value if isinstance(value, str) and value[:1] in "[{" and raw else json.dumps(value)
    body = f'{{"id": "f", "url": null, "{field}": {inner}}}'.encode()
    for parse in (parse_poll_reply, parse_start_reply):
        status = outcome(parse, body)
        if isinstance(status, TransientError):
            assert "malformed" in str(status)
            continue
        assert status.id and (status.progress is None or 0 <= status.progress <= 1)
