"""Scenarios you write: a fault menu on the command line, or a whole scenario in a TOML file.

    safenet chaos run calm --faults kill=2,partition-halves,clock-skew --fault-interval 3
    safenet chaos run my-scenario.toml --seeds 1..50

`--faults` replaces a scenario's nemesis menu: fault names, each with an optional relative
weight (`name=weight`, 1 if left out); `--fault-interval` is the mean number of seconds
between two faults. A scenario file says what the command line cannot; every table and key
is optional, and anything this module does not know is an error rather than ignored:

    base = "mixed"             # start from a named scenario (default: "calm")
    summary = "what it is for"
    nodes = 12
    duration = 40.0            # seconds of attack
    quiet = 20.0               # seconds between the final heal and the final checks
    byzantine = 0              # lying nodes

    [faults]                   # fault -> weight; replaces the base's menu
    kill = 2.0
    "partition-halves" = 1.0
    clock-drift = 0.5

    [nemesis]                  # simulations.faults.NemesisConfig
    interval = 3.0
    duration = [2.0, 8.0]      # how long one fault lasts, uniform between
    max_down = 2

    [churn]                    # simulations.faults.ChurnConfig; `enabled = false` turns it off
    session_mean = 120.0
    dead_mean = 10.0

    [workload]                 # simulations.workloads.WorkloadConfig
    processes = 6

    [link]                     # simulations.network.LinkModel: the network's normal weather
    delay_mean = 0.01

The scenario is named by the file's path as given, so a failing seed's replay command names
the file (`safenet chaos run my-scenario.toml --seed 7 ...`).
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from .faults import FAULTS, ChurnConfig, NemesisConfig
from .network import LinkModel
from .scenarios import SCENARIOS, Scenario
from .workloads import WorkloadConfig


class ScenarioError(ValueError):
    """A fault list or scenario file that does not make a scenario; the message says why."""


def is_file(name: str) -> bool:
    return name.endswith(".toml")


def resolve(name: str) -> Scenario:
    """A named scenario, or the scenario in the TOML file `name`."""
    if is_file(name):
        return load(name)
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ScenarioError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)} "
                            f"(or a scenario file ending in .toml)") from None


def parse_faults(text: str) -> dict[str, float]:
    """`kill=2,partition-halves,pause=0.5` as a menu; 'none' is the empty menu."""
    if text.strip() == "none":
        return {}
    menu: dict[str, float] = {}
    for part in text.split(","):
        name, sep, weight = part.strip().partition("=")
        if name not in FAULTS:
            raise ScenarioError(f"unknown fault {name!r}; known: {', '.join(sorted(FAULTS))}")
        try:
            value = float(weight) if sep else 1.0
        except ValueError:
            raise ScenarioError(f"the weight of {name} must be a number, got {weight!r}") from None
        if not 0 < value < 1e6:
            raise ScenarioError(f"the weight of {name} must be above 0, got {weight}")
        menu[name] = value
    return menu


def format_faults(menu: dict[str, float]) -> str:
    if not menu:
        return "none"
    return ",".join(name if weight == 1 else f"{name}={weight:g}" for name, weight in sorted(menu.items()))


_TOP = {"base", "summary", "nodes", "duration", "quiet", "byzantine", "faults", "nemesis", "churn", "workload", "link"}


def load(path: str) -> Scenario:
    """The scenario in TOML file `path`; ScenarioError for anything wrong with it."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ScenarioError(f"no scenario file {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path} is not TOML: {exc}") from None
    unknown = set(data) - _TOP
    if unknown:
        raise ScenarioError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(_TOP)}")
    base_name = data.get("base", "calm")
    if base_name not in SCENARIOS:
        raise ScenarioError(f"{path}: base {base_name!r} is not a named scenario ({', '.join(SCENARIOS)})")
    base = SCENARIOS[base_name]
    changes: dict[str, Any] = {"name": path, "summary": str(data.get("summary", f"{path} (from {base_name})"))}
    for key, kind, low in (("nodes", int, 1), ("byzantine", int, 0), ("duration", float, 0), ("quiet", float, 0)):
        if key in data:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and
                                                                                   not isinstance(value, int)):
                raise ScenarioError(f"{path}: {key} must be {'an integer' if kind is int else 'a number'}")
            if value < low:
                raise ScenarioError(f"{path}: {key} must be at least {low}")
            changes[key] = kind(value)
    if "faults" in data:
        table = _table(data, "faults", path)
        changes["faults"] = parse_faults(",".join(f"{k}={_number(v, f'faults.{k}', path)}" for k, v in table.items())) \
            if table else {}
    if "nemesis" in data:
        fields = _table(data, "nemesis", path)
        fields = _seconds_range(fields, "duration", "nemesis", path)
        changes["nemesis"] = _dataclass(base.nemesis, fields, "nemesis", path)
    if "churn" in data:
        fields = dict(_table(data, "churn", path))
        if fields.pop("enabled", True) is False:
            changes["churn"] = None
        else:
            changes["churn"] = _dataclass(base.churn or ChurnConfig(), fields, "churn", path)
    if "workload" in data:
        fields = _seconds_range(_table(data, "workload", path), "es_follower_life", "workload", path)
        changes["workload"] = _dataclass(base.workload, fields, "workload", path)
    if "link" in data:
        changes["link"] = _dataclass(base.link, _table(data, "link", path), "link", path)
    return base.with_(**changes)


def _table(data: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    table = data[key]
    if not isinstance(table, dict):
        raise ScenarioError(f"{path}: {key} must be a table ([{key}])")
    return table


def _number(value: Any, key: str, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{path}: {key} must be a number")
    return float(value)


_KINDS = {NemesisConfig: "nemesis", ChurnConfig: "churn", WorkloadConfig: "workload", LinkModel: "link"}


def _seconds_range(fields: dict[str, Any], key: str, table: str, path: str) -> dict[str, Any]:
    """`fields` with its `key`, if there, checked as [shortest, longest] seconds and made a tuple."""
    if key not in fields:
        return fields
    pair = fields[key]
    if not (isinstance(pair, list) and len(pair) == 2
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in pair) and 0 <= pair[0] <= pair[1]):
        raise ScenarioError(f"{path}: {table}.{key} must be [shortest, longest] seconds")
    return {**fields, key: (float(pair[0]), float(pair[1]))}


def _dataclass(current: Any, fields: dict[str, Any], table: str, path: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(current)}
    unknown = set(fields) - set(known)
    if unknown:
        raise ScenarioError(f"{path}: unknown keys in [{table}]: {sorted(unknown)}; known: {sorted(known)}")
    out = {}
    for key, value in fields.items():
        old = getattr(current, key)
        if isinstance(old, str):
            if not isinstance(value, str):
                raise ScenarioError(f"{path}: {table}.{key} must be a string")
        elif isinstance(old, tuple):
            pass  # checked by the caller (_seconds_range)
        elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ScenarioError(f"{path}: {table}.{key} must be a number, at least 0")
        elif isinstance(old, int) and not isinstance(old, bool) and old is not None and not isinstance(value, int):
            raise ScenarioError(f"{path}: {table}.{key} must be an integer")
        out[key] = value
    try:
        return dataclasses.replace(current, **out)
    except (TypeError, ValueError) as exc:
        raise ScenarioError(f"{path}: [{table}]: {exc}") from None
