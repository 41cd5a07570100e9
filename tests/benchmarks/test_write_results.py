"""run_gpu.sh's helper replaces exactly the text between the GPU-results markers."""
import pytest
from write_results import END, START, replace_block


def test_only_the_marked_block_changes():
    doc = f"# title\nbefore\n{START}\nold 1\nold 2\n{END}\nafter\n"
    assert replace_block(doc, "new\n\n") == f"# title\nbefore\n{START}\nnew\n{END}\nafter\n"


@pytest.mark.parametrize("doc", ["no markers", f"{END}\n{START}", f"{START}\n{START}\n{END}"])
def test_missing_reversed_or_repeated_markers_are_refused(doc):
    with pytest.raises(ValueError, match="exactly one"):
        replace_block(doc, "x")
