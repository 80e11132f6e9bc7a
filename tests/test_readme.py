"""The README documents every configuration key and the two front-door commands."""

from pathlib import Path

from pydantic import BaseModel

from driftloop.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _keys() -> list[str]:
    keys = []
    for name, field in Settings.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += [f"{name}.{sub}" for sub in ann.model_fields]
        else:
            keys.append(name)
    return keys


def test_every_setting_is_documented() -> None:
    missing = [k for k in _keys() if f"`{k}`" not in README]
    assert not missing, f"README lacks configuration keys: {missing}"


def test_front_door_commands_are_documented() -> None:
    assert "make run" in README and "make test" in README
