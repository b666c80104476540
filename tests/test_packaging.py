"""Packaging: the licence matches setup.cfg; CITATION.cff cites the software and papers."""

import re

from support import REPO

import mcdpf


def test_license_and_citation_match_the_package():
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    assert re.search(r"^license = MIT$", (REPO / "setup.cfg").read_text(), re.M)
    citation = (REPO / "CITATION.cff").read_text()
    assert citation.startswith("cff-version: 1.2.0")
    assert f"version: {mcdpf.__version__}\n" in citation and "license: MIT" in citation
    for cited in ("Online Training of LSTM Networks in Distributed Systems",
                  "arXiv:1710.08744", "Markov Chain Distributed Particle Filters (MCDPF)",
                  "Convergence of the Markov Chain Distributed Particle Filter",
                  "IEEE Transactions on Signal Processing"):
        assert cited in citation
