"""The flat directory without I/O: keypad -> flat, the import file's checks, the CRM contract,
and falling back from a failing primary."""

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from softswitch.directory.crm import (
    DirectoryError,
    DirectoryGarbage,
    FallbackDirectory,
    parse_crm_answer,
)
from softswitch.directory.models import Flat, FlatDevice, FlatLookup, Panel
from softswitch.directory.store import (
    DirectoryFile,
    parse_directory_file,
    plan_directory_import,
)
from softswitch.settings import Settings

pytestmark = pytest.mark.unit

ENTRANCE_2 = Panel(
    panel_id="p-2", account="door-2", building="lenina-5", flat_first=41, flat_last=80,
    flat_offset=40,
)  # fmt: skip
FLAT_52 = Flat(
    building="lenina-5",
    number="52",
    devices=(FlatDevice(kind="sip", target="1052"), FlatDevice(kind="forward", target="+7916")),
)


@pytest.mark.parametrize(
    ("dialled", "flat"),
    [
        ("1", "41"),
        ("12", "52"),
        ("012", "52"),  # keypads send leading zeros as typed
        ("40", "80"),
        ("0", None),  # 40: below flat_first
        ("41", None),  # 81: above flat_last
        ("", None),
        ("12#", None),
        ("+12", None),
        ("-1", None),
        ("²", None),  # str.isdigit() says yes, int() raises
        ("١٢", None),  # Arabic-Indic digits
        ("1" * 5000, None),  # int() refuses more than 4300 digits
    ],
)
def test_a_keypad_entry_is_a_flat_only_within_the_panels_range(
    dialled: str, flat: str | None
) -> None:
    assert ENTRANCE_2.flat_number(dialled) == flat


def test_a_panel_without_offset_rings_the_flat_dialled() -> None:
    panel = Panel(panel_id="p-1", account="door-1", building="b", flat_first=1, flat_last=40)
    assert [panel.flat_number(n) for n in ("1", "40", "41", "0")] == ["1", "40", None, None]


def directory_json(**overrides: Any) -> str:
    document: dict[str, Any] = {
        "panels": [ENTRANCE_2.model_dump()],
        "flats": [FLAT_52.model_dump()],
    }
    document.update(overrides)
    return json.dumps(document)


def test_a_good_file_parses_into_the_models() -> None:
    directory, errors = parse_directory_file(directory_json())
    assert errors == []
    assert directory == DirectoryFile(panels=(ENTRANCE_2,), flats=(FLAT_52,))


def test_the_example_file_is_valid() -> None:
    example = Path(__file__).parents[2] / "docs" / "directory.example.json"
    directory, errors = parse_directory_file(example.read_text())
    assert errors == []
    assert len(directory.panels) == 2


@pytest.mark.parametrize(
    ("panel", "error"),
    [
        ({"account": "door-2@example.org"}, "panel #0 'p-2': account: a SIP account name"),
        ({"account": "door 2"}, "panel #0 'p-2': account: a SIP account name"),
        ({"building": "  "}, "panel #0 'p-2': building: must not be blank"),
        ({"flat_first": 90}, "panel #0 'p-2': flat_first: 90 is above flat_last 80"),
        ({"flat_first": -1}, "panel #0 'p-2': flat_first: Input should be greater than"),
        ({"flat_last": 1_000_000}, "panel #0 'p-2': flat_last: at most 999999"),
        ({"flat_offset": -1_000_000}, "panel #0 'p-2': flat_offset: between"),
        ({"flat_last": "many"}, "panel #0 'p-2': flat_last: Input should be a valid integer"),
        ({"colour": "red"}, "panel #0 'p-2': colour: Extra inputs are not permitted"),
        ({"city_id": "no such"}, "panel #0 'p-2': city_id: a city key without spaces"),
    ],
)
def test_a_bad_panel_is_named_with_its_field(panel: dict[str, Any], error: str) -> None:
    directory, errors = parse_directory_file(
        directory_json(panels=[ENTRANCE_2.model_dump() | panel])
    )
    assert len(errors) == 1
    assert errors[0].startswith(error)
    assert directory.panels == ()


@pytest.mark.parametrize(
    ("flat", "error"),
    [
        ({"number": "052"}, "flat #0 'lenina-5' '052': number: a decimal 0..999999"),
        ({"number": "12A"}, "flat #0 'lenina-5' '12A': number: a decimal"),
        ({"number": 52}, "flat #0 'lenina-5': number: Input should be a valid string"),
        (
            {"devices": [{"kind": "forward", "target": "gw.example"}]},
            "flat #0 'lenina-5' '52': devices.0.target: a forward goes to a sip:/sips: URI",
        ),
        (
            {"devices": [{"kind": "sip", "target": "1052@pbx"}]},
            "flat #0 'lenina-5' '52': devices.0.target: a sip device is an account name",
        ),
        (
            {"devices": [{"kind": "fax", "target": "1052"}]},
            "flat #0 'lenina-5' '52': devices.0.kind: Input should be 'sip', 'mobile'",
        ),
        (
            {"devices": [{"kind": "sip", "target": "1"}, {"kind": "sip", "target": "1"}]},
            "flat #0 'lenina-5' '52': devices.1: same kind and target as devices.0",
        ),
    ],
)
def test_a_bad_flat_is_named_with_its_field(flat: dict[str, Any], error: str) -> None:
    _, errors = parse_directory_file(directory_json(flats=[FLAT_52.model_dump() | flat]))
    assert len(errors) == 1
    assert errors[0].startswith(error)


def test_keys_used_twice_are_refused_naming_both_records() -> None:
    other_panel = ENTRANCE_2.model_dump() | {"panel_id": "p-3"}
    _, errors = parse_directory_file(
        directory_json(
            panels=[ENTRANCE_2.model_dump(), ENTRANCE_2.model_dump(), other_panel],
            flats=[FLAT_52.model_dump(), FLAT_52.model_dump()],
        )
    )
    assert errors == [
        "panel #1 'p-2': panel_id already used by panel #0 'p-2'",
        "panel #1 'p-2': account already used by panel #0 'p-2'",
        "panel #2 'p-3': account already used by panel #0 'p-2'",
        "flat #1 'lenina-5' '52': building and number already used by flat #0 'lenina-5' '52'",
    ]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{", "not JSON: "),
        ("[]", "the file must hold a JSON object"),
        ('{"panels": {}}', "panels: must be a JSON list"),
        ('{"routes": []}', "unknown key 'routes'"),
        ('{"flats": [7]}', "flat #0: Input should be a valid dictionary"),
    ],
)
def test_a_file_of_the_wrong_shape_is_refused(text: str, error: str) -> None:
    _, errors = parse_directory_file(text)
    assert len(errors) == 1
    assert errors[0].startswith(error)


def test_every_error_of_a_file_is_reported_at_once() -> None:
    _, errors = parse_directory_file(
        directory_json(
            panels=[ENTRANCE_2.model_dump() | {"account": "a b"}],
            flats=[FLAT_52.model_dump() | {"number": "0x1"}],
        )
    )
    assert len(errors) == 2


def test_the_plan_diffs_by_key_and_removes_only_when_replacing() -> None:
    moved = ENTRANCE_2.model_copy(update={"address": "moved"})
    new_flat = Flat(building="lenina-5", number="53")
    current = DirectoryFile(panels=(ENTRANCE_2,), flats=(FLAT_52, Flat(building="b", number="1")))
    incoming = DirectoryFile(panels=(moved,), flats=(FLAT_52, new_flat))
    plan = plan_directory_import(current, incoming, replace=False)
    assert plan.panels.changed == ["p-2"]
    assert (plan.flats.added, plan.flats.unchanged) == ([("lenina-5", "53")], [("lenina-5", "52")])
    assert plan.flats.removed == []
    assert plan_directory_import(current, incoming, replace=True).flats.removed == [("b", "1")]


def test_reordering_a_flats_devices_changes_the_flat() -> None:
    reordered = FLAT_52.model_copy(update={"devices": FLAT_52.devices[::-1]})
    plan = plan_directory_import(
        DirectoryFile(flats=(FLAT_52,)), DirectoryFile(flats=(reordered,)), replace=False
    )
    assert plan.flats.changed == [("lenina-5", "52")]


def crm_body(**overrides: Any) -> bytes:
    answer: dict[str, Any] = {"panel": ENTRANCE_2.model_dump(), "flat": FLAT_52.model_dump()}
    answer.update(overrides)
    return json.dumps(answer).encode()


def test_a_crm_answer_becomes_a_lookup_from_the_crm() -> None:
    assert parse_crm_answer(200, crm_body(), "door-2") == FlatLookup(
        panel=ENTRANCE_2, flat=FLAT_52, source="crm"
    )
    assert parse_crm_answer(200, crm_body(flat=None), "door-2").flat is None
    minimal = {"panel": {"panel_id": "p", "account": "door-2", "building": "b"}}
    assert parse_crm_answer(200, json.dumps(minimal).encode(), "door-2").panel == Panel(
        panel_id="p", account="door-2", building="b"
    )


def test_a_crm_404_is_an_unknown_panel() -> None:
    assert parse_crm_answer(404, b"<html>not found</html>", "door-9") == FlatLookup(
        panel=None, flat=None, source="crm"
    )


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<html>", "Invalid JSON"),
        (b"[]", "should be an object"),
        (b"{}", "panel: Field required"),
        (crm_body(extra=1), "extra: Extra inputs are not permitted"),
        (crm_body(panel=ENTRANCE_2.model_dump() | {"account": "door-3"}), "not the panel asked"),
        (crm_body(flat=FLAT_52.model_dump() | {"building": "other"}), "flat.building"),
        (
            crm_body(flat=FLAT_52.model_dump() | {"devices": [{"kind": "sip", "target": "a@b"}]}),
            "flat.devices.0.target",
        ),
    ],
)
def test_a_crm_answer_that_breaks_the_contract_is_garbage(body: bytes, why: str) -> None:
    with pytest.raises(DirectoryGarbage, match=why):
        parse_crm_answer(200, body, "door-2")


def test_a_crm_status_outside_the_contract_is_an_error() -> None:
    with pytest.raises(DirectoryError, match="HTTP 500") as raised:
        parse_crm_answer(500, crm_body(), "door-2")
    assert not isinstance(raised.value, DirectoryGarbage)


DATABASE_ANSWER = FlatLookup(panel=ENTRANCE_2, flat=FLAT_52, source="database")


class AnsweringDirectory:
    def __init__(self, lookup: FlatLookup) -> None:
        self.lookup = lookup
        self.asked: list[tuple[str, str]] = []

    async def lookup_flat(self, panel_account: str, dialled: str) -> FlatLookup:
        self.asked.append((panel_account, dialled))
        return self.lookup


class FailingDirectory:
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def lookup_flat(self, panel_account: str, dialled: str) -> FlatLookup:
        raise self.error


def fallbacks(reason: str) -> float:
    value = REGISTRY.get_sample_value("softswitch_directory_fallbacks_total", {"reason": reason})
    return value or 0.0


async def test_the_primarys_answer_is_used_when_it_answers() -> None:
    crm_answer = DATABASE_ANSWER.model_copy(update={"source": "crm"})
    fallback = AnsweringDirectory(DATABASE_ANSWER)
    directory = FallbackDirectory(AnsweringDirectory(crm_answer), fallback)
    assert await directory.lookup_flat("door-2", "12") == crm_answer
    assert fallback.asked == []


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (TimeoutError("CRM did not answer within 0.3s"), "timeout"),
        (DirectoryGarbage("CRM answer breaks the contract"), "garbage"),
        (DirectoryError("CRM answered HTTP 503"), "error"),
        (ConnectionResetError("reset by peer"), "error"),
    ],
)
async def test_the_fallback_answers_when_the_primary_fails(
    error: Exception, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    fallback = AnsweringDirectory(DATABASE_ANSWER)
    directory = FallbackDirectory(FailingDirectory(error), fallback)
    before = fallbacks(reason)
    with caplog.at_level(logging.WARNING, logger="softswitch.directory"):
        assert await directory.lookup_flat("door-2", "12") == DATABASE_ANSWER
    assert fallback.asked == [("door-2", "12")]
    assert fallbacks(reason) == before + 1
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert f"falls back ({reason})" in caplog.records[0].getMessage()


async def test_when_the_fallback_fails_too_the_lookup_raises() -> None:
    directory = FallbackDirectory(
        FailingDirectory(TimeoutError()), FailingDirectory(DirectoryError("database down"))
    )
    with pytest.raises(DirectoryError, match="database down"):
        await directory.lookup_flat("door-2", "12")


def test_directory_settings_come_from_softswitch_directory_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOFTSWITCH_DIRECTORY_CRM_URL", "https://crm.example/api")
    monkeypatch.setenv("SOFTSWITCH_DIRECTORY_CRM_TIMEOUT_SECONDS", "0.5")
    monkeypatch.setenv("SOFTSWITCH_DIRECTORY_PUSH_URL", "")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.directory.crm_url == "https://crm.example/api"
    assert settings.directory.crm_timeout_seconds == 0.5
    assert settings.directory.push_url is None
    assert settings.directory.push_timeout_seconds == 2.0


def test_a_crm_url_that_is_not_http_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOFTSWITCH_DIRECTORY_CRM_URL", "crm.example:8080")
    with pytest.raises(ValueError, match="not an http"):
        Settings(_env_file=None)  # type: ignore[call-arg]
