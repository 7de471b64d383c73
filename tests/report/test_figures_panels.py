"""Where a figure's panels go (llmbench.report.figures.panels)."""

import pytest

from llmbench.report.figures.panels import WRAP_COLUMNS, panel_slots


def test_a_full_enough_matrix_keeps_a_row_per_configuration_and_a_column_per_value():
    rows, columns = ["a", "b"], [1, 2, 3]
    drawn = {("a", 1), ("a", 2), ("a", 3), ("b", 2)}  # 4 of 6: at least 60 % filled
    assert panel_slots(rows, columns, drawn) == {
        ("a", 1): (0, 0),
        ("a", 2): (0, 1),
        ("a", 3): (0, 2),
        ("b", 2): (1, 1),
    }


def test_a_mostly_empty_matrix_wraps_its_panels_in_reading_order():
    rows, columns = list("abcdef"), [1, 2, 3]
    drawn = {("a", 1), ("b", 2), ("c", 3), ("d", 1), ("e", 2), ("f", 3)}  # 6 of 18
    slots = panel_slots(rows, columns, drawn)
    assert list(slots) == [("a", 1), ("b", 2), ("c", 3), ("d", 1), ("e", 2), ("f", 3)]
    assert list(slots.values()) == [divmod(i, WRAP_COLUMNS) for i in range(6)]
    with pytest.raises(ValueError, match="no panel"):
        panel_slots(rows, columns, set())
