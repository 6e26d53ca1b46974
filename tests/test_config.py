"""Configuration: precedence, validation, and docs that match the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, PacsConfig, load_settings, settings_table

DOCS = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_docs_list_every_setting() -> None:
    assert settings_table() in DOCS.read_text(), "regenerate the table in docs/configuration.md"


def test_precedence_file_env_override(tmp_path: Path) -> None:
    toml = tmp_path / "gw.toml"
    toml.write_text(
        'port = 9000\ncalling_aet = "FILEAET"\ndimse_timeout = 12\n'
        '[[pacs]]\nname = "main"\naet = "ORTHANC"\nhost = "pacs"\nport = 4242\n'
    )
    s = load_settings(toml, env={"DICOMWEB_GATEWAY_PORT": "9100"}, calling_aet="CLIAET")
    assert s.port == 9100  # env beats file
    assert s.calling_aet == "CLIAET"  # explicit override beats both
    assert s.dimse_timeout == 12.0
    assert s.pacs == (PacsConfig("main", "ORTHANC", "pacs", 4242),)


def test_pacs_from_env() -> None:
    s = load_settings(env={"DICOMWEB_GATEWAY_PACS": "A@h1:104,B@h2:11112"})
    assert [(p.aet, p.host, p.port) for p in s.pacs] == [("A", "h1", 104), ("B", "h2", 11112)]
    assert s.pacs_named("B") is s.pacs[1]
    assert s.pacs_named(None) is s.pacs[0]


@pytest.mark.parametrize(
    "env,name",
    [
        ({"DICOMWEB_GATEWAY_PORT": "eighty"}, "port"),
        ({"DICOMWEB_GATEWAY_PACS": "nonsense"}, "pacs"),
        ({"DICOMWEB_GATEWAY_CALLING_AET": "A" * 17}, "calling_aet"),
        ({"DICOMWEB_GATEWAY_QIDO_EMPTY_STATUS": "404"}, "qido_empty_status"),
        ({"DICOMWEB_GATEWAY_BASE_PATH": "dicomweb/"}, "base_path"),
        ({"DICOMWEB_GATEWAY_DIMSE_TIMEOUT": "0"}, "dimse_timeout"),
    ],
)
def test_invalid_values_name_the_setting(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(env=env)


def test_unknown_key_in_file(tmp_path: Path) -> None:
    toml = tmp_path / "gw.toml"
    toml.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="prot"):
        load_settings(toml, env={})


def test_header_attributes_from_toml(tmp_path: Path) -> None:
    toml = tmp_path / "gw.toml"
    toml.write_text(
        '[[pacs]]\naet = "Q"\nhost = "127.0.0.1"\nport = 11112\n'
        'header_attributes = ["SOPClassUID", "RequestAttributesSequence"]\n'
    )
    (pacs,) = load_settings(toml, env={}).pacs
    assert pacs.header_attributes == ("SOPClassUID", "RequestAttributesSequence")


@pytest.mark.parametrize(
    ("keyword", "message"),
    [("SOPClassUld", "is no keyword"), ("OperatorsName", "cannot be matched")],
)
def test_header_attributes_are_checked(tmp_path: Path, keyword: str, message: str) -> None:
    toml = tmp_path / "gw.toml"
    toml.write_text(
        '[[pacs]]\naet = "Q"\nhost = "127.0.0.1"\nport = 11112\n'
        f'header_attributes = ["{keyword}"]\n'
    )
    with pytest.raises(ConfigError, match=message):
        load_settings(toml, env={})


def test_study_level_header_attributes_are_refused_at_start() -> None:
    from gateway.web.app import create_app

    pacs = PacsConfig(
        name="q", aet="Q", host="127.0.0.1", port=11112, header_attributes=("StudyDescription",)
    )
    with pytest.raises(ConfigError, match="study attribute"):
        create_app(load_settings(env={}, pacs=(pacs,)))
