from pathlib import Path

import pytest

from driftloop.settings import Settings, SettingsError, load_settings


def test_defaults_are_embedded_and_nothing_is_created(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.store.url.startswith("sqlite:///")
    assert s.drift.alpha == 0.05
    assert s.model.labels == ("negative", "neutral", "positive")
    # Building settings must not create the working directory.
    assert not (tmp_path / ".driftloop").exists()


def test_toml_then_env_then_overrides(tmp_path: Path, monkeypatch) -> None:
    cfg = tmp_path / "driftloop.toml"
    cfg.write_text('[drift]\nalpha = 0.01\npca_components = 8\n[store]\nurl = "sqlite:///x.db"\n')
    s = load_settings(cfg)
    assert (s.drift.alpha, s.drift.pca_components, s.store.url) == (0.01, 8, "sqlite:///x.db")
    monkeypatch.setenv("DRIFTLOOP_DRIFT__ALPHA", "0.02")
    s = load_settings(cfg)
    assert s.drift.alpha == 0.02 and s.drift.pca_components == 8
    s = load_settings(cfg, drift={"alpha": 0.03})
    assert s.drift.alpha == 0.03


def test_invalid_values_and_missing_file_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[drift]\nalpha = 2.0\n")
    with pytest.raises(SettingsError, match="alpha"):
        load_settings(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text("[drfit]\nalpha = 0.1\n")
    with pytest.raises(SettingsError):
        load_settings(typo)


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValueError):
        s.drift = s.drift  # type: ignore[misc]
