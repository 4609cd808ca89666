import pytest

from analysis.errors import DataError
from analysis.store.id_files import campaign_groups, parse_id_text, read_id_file
from tests.conftest import SKILLBOX, needs_shared


@needs_shared("skillbox", "ids_first_company_positive.txt")
def test_real_id_files_give_5000_each_and_no_overlap():
    pos = read_id_file(SKILLBOX / "ids_first_company_positive.txt")
    neg = read_id_file(SKILLBOX / "ids_first_company_negative.txt")
    assert len(pos.ids) == 5000 and len(neg.ids) == 5000
    assert pos.n_tokens == 5000 and neg.n_tokens == 5000
    assert not pos.unique & neg.unique


def test_hard_wrap_inside_a_number_is_joined():
    text = "Ids of positive AB people 123,45\n67;;;89|||10 11abc12\n\n"
    assert parse_id_text(text).ids == (123, 4567, 89, 10, 11, 12)


def test_letters_glued_to_digits_separate_ids():
    assert parse_id_text("hdhd172555 103776kdkdjff;;;5").ids == (172555, 103776, 5)


def test_empty_file_is_an_error(tmp_path):
    f = tmp_path / "ids.txt"
    f.write_text("  \n")
    with pytest.raises(DataError, match="ids.txt: the id file is empty"):
        read_id_file(f)


def test_file_without_digits_is_an_error(tmp_path):
    f = tmp_path / "ids.txt"
    f.write_text("Ids of people, none here")
    with pytest.raises(DataError, match="no digits"):
        read_id_file(f)


def test_duplicates_and_overlap_are_reported_not_dropped_silently():
    pos = parse_id_text("1,2,2,3,4")
    neg = parse_id_text("4;5;6;6")
    assert pos.duplicates == {2: 2} and neg.duplicates == {6: 2}
    groups = campaign_groups(pos, neg, known_ids={1, 2, 3, 5})
    rep = groups.report()
    assert groups.overlap == (4,)
    assert 4 not in groups.treated and 4 not in groups.control
    assert rep["overlap"] == 1 and rep["duplicated_treated"] == 1
    assert rep["unknown_control"] == 1 and 6 in rep["unknown_examples"]


def test_one_id_per_line_is_read_as_separate_ids():
    assert parse_id_text("id\n12\n345\n6\n").ids == (12, 345, 6)


def test_hard_wrapped_lines_are_joined_back():
    text = "Ids " + ",".join(str(10_000 + i) for i in range(400))
    wrapped = "\n".join(text[i:i + 1000] for i in range(0, len(text), 1000)) + "\n\n"
    assert parse_id_text(wrapped).ids == tuple(10_000 + i for i in range(400))


def test_glued_ids_are_a_clear_error():
    with pytest.raises(DataError, match="glued"):
        parse_id_text("1234567890123456789012", source="ids.txt")
