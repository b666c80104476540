"""Registries: schemes picked by name from the configuration (particles' ``resampling`` shape).

Each registry maps a name to an entry (a builder or kernel) and its traits. Entries are
added where they are defined, by a decorator::

    @ALGORITHMS.register("pf", communicating=False)
    def build_pf(context): ...

The configuration's choices, the command line's help and the benchmarks read the
registries, so a new walk, topology, data source, resampling scheme or algorithm is one
decorated function (a covariance form one decorated class). A registry knows the module
that fills it (``home``) and imports it exactly once, on its first registration or read,
so neither reading the choices nor registering a plugin depends on import order: the
built-ins come first, then the plugins.
A registry may give its traits a type (``traits``, a frozen dataclass with defaults:
:class:`~mcdpf.learner.AlgorithmTraits`); an entry registered directly gets its defaults.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .learner import AlgorithmTraits


class UnknownChoice(LookupError):
    """A name that is not registered."""


@dataclass(frozen=True)
class Entry:
    """One registered scheme: its name, the registered object and its traits."""

    name: str
    target: Any
    traits: Any = field(default_factory=dict)


class Registry:
    """Named entries of one kind, in registration order.

    Parameters
    ----------
    kind
        What the entries are, for messages ("algorithm", "walk", ...).
    home
        Module whose import registers every built-in entry.
    traits
        The type of the entries' traits, built from the keywords of :meth:`register`
        (default: a plain ``dict``).
    """

    def __init__(self, kind: str, home: str, traits: Callable[..., Any] = dict):
        self.kind = kind
        self.home = home
        self.traits = traits
        self._entries: dict[str, Entry] = {}
        self._home_imported = False

    def register(self, name: str, **traits) -> Callable:
        """Decorator: register the decorated object under ``name`` with ``traits``."""
        def decorate(target):
            entries = self._filled()
            if name in entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            entries[name] = Entry(name, target, self.traits(**traits))
            return target
        return decorate

    def _filled(self) -> dict[str, Entry]:
        """The entries, after the home module's import (once; it registers the built-ins).

        The flag is set before the import, so the home's own registrations (and a home
        that is being imported already) do not import it again.
        """
        if not self._home_imported:
            self._home_imported = True
            try:
                importlib.import_module(self.home)
            except BaseException:
                self._home_imported = False
                raise
        return self._entries

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._filled())

    def __contains__(self, name: object) -> bool:
        return name in self._filled()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._filled())

    def entry(self, name: str) -> Entry:
        """The entry ``name``; :class:`UnknownChoice` names the choices and a close match."""
        entries = self._filled()
        if name not in entries:
            close = difflib.get_close_matches(str(name), list(entries), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UnknownChoice(f"unknown {self.kind} {name!r}{hint}; choose from "
                           f"{', '.join(entries)}")
        return entries[name]

    def __getitem__(self, name: str) -> Any:
        return self.entry(name).target


ALGORITHMS = Registry("algorithm", "mcdpf.algorithms", AlgorithmTraits)
WALKS = Registry("walk", "mcdpf.topology.walks")
TOPOLOGIES = Registry("topology", "mcdpf.topology.graph")
SOURCES = Registry("data source", "mcdpf.sources")
RESAMPLING = Registry("resampling scheme", "mcdpf.kernels.resampling")
PROPOSALS = Registry("proposal", "mcdpf.variants")
KERNELS = Registry("particle kernel", "mcdpf.variants")
COVARIANCES = Registry("covariance form", "mcdpf.covariance")
