"""Recording: every per-step diagnostic of a learner is declared once and recorded by name."""

import numpy as np

from mcdpf.learner import StepInfo, diagnostics
from mcdpf.recording import Recorder
from mcdpf.rundir import RECORDS


def test_every_step_diagnostic_is_the_output_record_of_its_name():
    for name, (spec, default) in diagnostics().items():
        field = RECORDS[name]
        assert field.dtype == np.dtype(spec.dtype).type and field.doc == spec.doc
        assert field.fill == default or (np.isnan(field.fill) and np.isnan(default))


def test_the_recorder_stores_each_diagnostic_under_its_name():
    recorder = Recorder(3, 2, record_estimates=False)
    values = {name: index + 1 for index, name in enumerate(StepInfo._fields)}
    recorder.record(1, 0.5, 0.25, StepInfo(**values), 0.0, None)
    for name, value in values.items():
        assert recorder.data[name][1] == value, name
        assert recorder.data[name][0] == RECORDS[name].fill or np.isnan(RECORDS[name].fill)
    assert recorder.data["squared_error"][1] == 0.0625
