"""Settings: validation and a round trip through a store."""

from dataclasses import fields

from krita_diffusers.settings import (
    FIELDS,
    LABELS,
    LIMITS,
    SECTIONS,
    MemoryStore,
    Settings,
    load,
    save,
    validate,
)


def test_defaults_are_valid():
    assert validate(Settings()) == []


def test_round_trip_keeps_every_field():
    store = MemoryStore()
    custom = Settings(
        server_url="https://gpu.example:9000/kd",
        token="abc123",
        server_command="/opt/kd/bin/krita-diffusers-server serve --port 9000",
        sampler="Euler a",
        steps=7,
        cfg_scale=4.5,
        working_resolution=768,
        context_margin=0,
        mask_grow=3,
        mask_feather=0,
        preview_every=0,
        history_size=5,
    )
    save(store, custom)
    assert load(store) == custom


def test_empty_store_gives_defaults():
    assert load(MemoryStore()) == Settings()


def test_unreadable_or_invalid_stored_values_fall_back_to_defaults():
    store = MemoryStore()
    save(store, Settings(steps=12))
    store.data["krita_diffusers/cfg_scale"] = "lots"
    store.data["krita_diffusers/history_size"] = "0"
    store.data["krita_diffusers/server_url"] = "ftp://nowhere"
    settings = load(store)
    assert settings.steps == 12
    assert settings.cfg_scale == Settings().cfg_scale
    assert settings.history_size == Settings().history_size
    assert settings.server_url == Settings().server_url


def test_validation_names_each_bad_field_with_a_sentence():
    bad = Settings(
        server_url="localhost:7860",
        token="two words",
        server_command='serve "unclosed',
        steps=0,
        cfg_scale=99,
        working_resolution=100,
        history_size=1000,
    )
    problems = {p.field: p.message for p in validate(bad)}
    assert set(problems) == {
        "server_url",
        "token",
        "server_command",
        "steps",
        "cfg_scale",
        "working_resolution",
        "history_size",
    }
    assert all(message.endswith(".") for message in problems.values())


def test_bad_port_is_reported():
    assert [p.field for p in validate(Settings(server_url="http://host:99999"))] == ["server_url"]


def test_every_setting_is_one_entry_of_the_table():
    """Label, section, kind and limits live with the field itself; the derived views
    (LIMITS, LABELS) and validation follow from it."""
    assert [name for name, _spec in FIELDS] == [item.name for item in fields(Settings)]
    for name, spec in FIELDS:
        assert spec.label and spec.section in SECTIONS, name
        assert LABELS[name] == spec.label
        default = getattr(Settings(), name)
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            assert name in LIMITS and spec.low <= default <= spec.high, name
            too_big = Settings(**{name: spec.high + 1})
            assert {p.field for p in validate(too_big)} == {name}


def test_hires_fix_is_on_by_default_and_survives_a_round_trip():
    store = MemoryStore()
    assert Settings().hires_fix is True
    save(store, Settings(hires_fix=False))
    assert load(store).hires_fix is False
    store.set_value("krita_diffusers/hires_fix", "true")
    assert load(store).hires_fix is True
