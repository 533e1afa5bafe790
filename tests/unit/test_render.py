from pathlib import Path

import pytest

from softswitch.settings import Settings
from softswitch.stack.render import (
    TemplateError,
    kamailio_db_url,
    render_template,
    render_tree,
    template_values,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_placeholders_are_replaced_and_dialplan_variables_left_alone() -> None:
    text = "bindport=@@ARI_PORT@@\nexten => _X.,1,Set(A=${EXTEN})\n"
    assert render_template(text, {"ARI_PORT": "8088"}, source="t") == (
        "bindport=8088\nexten => _X.,1,Set(A=${EXTEN})\n"
    )


def test_a_placeholder_without_value_is_an_error_naming_it() -> None:
    with pytest.raises(TemplateError, match=r"http\.conf\.tmpl: no value for ARI_PORT, SIP_IP"):
        render_template("@@SIP_IP@@:@@ARI_PORT@@", {}, source="http.conf.tmpl")


def test_render_tree_reports_changes_only_when_content_changes(tmp_path: Path) -> None:
    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    (source / "plain.conf").write_text("static\n")
    (source / "http.conf.tmpl").write_text("port=@@P@@\n")
    assert render_tree(source, target, {"P": "1"}) is True
    assert (target / "http.conf").read_text() == "port=1\n"
    assert (target / "plain.conf").read_text() == "static\n"
    assert render_tree(source, target, {"P": "1"}) is False
    assert render_tree(source, target, {"P": "2"}) is True


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@127.0.0.1/db", "postgres://u:p@127.0.0.1:5432/db"),
        ("postgresql://u:p@127.0.0.1:5433/db?sslmode=disable", "postgres://u:p@127.0.0.1:5433/db"),
    ],
)
def test_kamailio_gets_its_own_database_url_form(url: str, expected: str) -> None:
    assert kamailio_db_url(url) == expected


def with_secrets(**kamailio: str) -> Settings:
    secrets = {"password": "x" * 16}
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        ari=secrets,
        ami=secrets,
        kamailio={"jsonrpc_token": "t" * 16, **kamailio},
        asterisk={"peer_token": "p" * 16},
    )


def test_every_shipped_template_renders_from_settings(tmp_path: Path) -> None:
    values = template_values(with_secrets())
    for folder in ("kamailio_cfg", "asterisk_cfg"):
        render_tree(REPO / folder, tmp_path / folder, values)
    rendered = "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())
    assert "@@" not in rendered
    assert "x" * 16 in rendered and "t" * 16 in rendered and "p" * 16 in rendered


def test_missing_stack_secret_is_explained() -> None:
    with pytest.raises(TemplateError, match="softswitch stack up"):
        template_values(Settings(_env_file=None))  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("trusted", "line"),
    [("10.0.0.0/8", '#!define TRUSTED_SOURCES "10.0.0.0/8"'), ("", "# (none)")],
)
def test_kamailio_trusts_by_address_only_the_configured_networks(trusted: str, line: str) -> None:
    values = template_values(with_secrets(trusted_sources=trusted))
    assert values["TRUSTED_SOURCES_DEFINE"] == line
