import json

import pytest

from model.labels import LABELS
from training.data import DataError, load_examples, parse_label_map


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_tfns_csv_out_of_the_box(tmp_path):
    f = write(tmp_path / "t.csv", 'text,label\n"$BTC breaks out",1\n"Stocks slide, multi\nline",0\nFed speaks today,2\n')
    ex = load_examples(f, "tfns").examples
    assert [e.label for e in ex] == ["positive", "negative", "neutral"]
    assert ex[1].text == "Stocks slide, multi\nline"
    assert [e.line for e in ex] == [2, 3, 5]  # the multi-line record moves the next one down


def test_alpaca_json_with_case_insensitive_labels(tmp_path):
    records = [
        {"instruction": "x", "input": "gm, MC to the moon", "output": "Positive"},
        {"instruction": "x", "input": "rugged again", "output": "negative"},
        {"instruction": "x", "input": "wen AMA", "output": "NEUTRAL"},
    ]
    f = write(tmp_path / "d.json", json.dumps(records))
    assert [e.label for e in load_examples(f).examples] == ["positive", "negative", "neutral"]


def test_jsonl_with_columns_and_label_map(tmp_path):
    f = write(tmp_path / "d.jsonl", '{"body": "up only", "y": "b"}\n\n{"body": "down bad", "y": "s"}\n')
    ex = load_examples(f, "jsonl", text_col="body", label_col="y", label_map=parse_label_map("b=positive,s=negative")).examples
    assert [(e.text, e.label, e.line) for e in ex] == [("up only", "positive", 1), ("down bad", "negative", 3)]


def test_a_jsonl_null_is_named_as_null_and_a_missing_key_as_missing(tmp_path):
    f = write(tmp_path / "n.jsonl", '{"text": "ok", "label": null}\n{"text": null, "label": "neutral"}\n{"text": "gm"}\n')
    skipped = [str(e) for e in load_examples(f, skip_bad=True).skipped]
    assert skipped == [f"{f}:1: 'label' is null", f"{f}:2: 'text' is null", f"{f}:3: missing column 'label'"]


def test_a_blank_line_in_a_csv_is_no_row_as_in_a_jsonl_file(tmp_path):
    """A CSV ending in a doubled line break (or with an empty line between rows) was fatal:
    'expected 2 fields, got 0'; a JSONL file's blank lines were always skipped."""
    f = write(tmp_path / "blank.csv", "text,label\r\nBTC up,positive\r\n\r\n   \r\nETH down,negative\r\n\r\n")
    result = load_examples(f)
    assert [(e.text, e.line) for e in result.examples] == [("BTC up", 2), ("ETH down", 5)] and result.skipped == []
    with pytest.raises(DataError, match=r"blank.csv:3: 'text' is empty"):  # a row of empty fields is still a row
        load_examples(write(tmp_path / "blank.csv", "text,label\nBTC up,positive\n,\n"))


@pytest.mark.parametrize("label_map", [None, {"1": "positive"}])
def test_a_row_of_one_empty_field_is_named_not_taken_for_a_blank_line(tmp_path, label_map):
    """A row `""` (one quoted empty field) was skipped as a blank line, silently, where `,` is
    named: a blank line is one with nothing on it but spaces."""
    label = "1" if label_map else "positive"
    f = write(tmp_path / "rows.csv", f'text,label\nBTC up,{label}\n""\n  \nETH up,{label}\n')
    with pytest.raises(DataError, match=r"rows.csv:3: expected 2 fields, got 1$"):
        load_examples(f, label_map=label_map)
    result = load_examples(f, label_map=label_map, skip_bad=True)
    assert [e.line for e in result.examples] == [2, 5] and [e.line for e in result.skipped] == [3]


@pytest.mark.parametrize(
    "content,line,reason",
    [
        ("text,label\nok,1\n,1\n", 3, "'text' is empty"),
        ("text,label\nok,1\nfine,7\n", 3, "label '7' is not a TFNS label"),
        ("text,label\nok,1\ntoo,many,fields\n", 3, "expected 2 fields"),
    ],
)
def test_malformed_csv_rows_name_file_and_line(tmp_path, content, line, reason):
    f = write(tmp_path / "bad.csv", content)
    with pytest.raises(DataError) as info:
        load_examples(f, "tfns")
    assert info.value.line == line and reason in str(info.value) and str(f) in str(info.value)


def test_a_label_of_another_format_names_its_line_what_the_format_reads_and_the_format_that_reads_it(tmp_path):
    """A TFNS file takes 0, 1, 2 (TFNS's Bearish, Bullish, Neutral); a file labelled in words given as
    --format tfns said only "not in the label map", which map it never said."""
    words = write(tmp_path / "words.csv", "text,label\n$BTC up,1\nETH dumping,negative\n")
    with pytest.raises(DataError) as info:
        load_examples(words, "tfns")
    assert str(info.value) == (f"{words}:3: label 'negative' is not a TFNS label: the tfns format reads 0 (negative: TFNS's Bearish), "
                               "1 (positive: Bullish) and 2 (neutral); 'negative' is a label word, which --format csv (or jsonl) reads as it is")
    assert [e.label for e in load_examples(write(tmp_path / "w.csv", "text,label\nETH dumping,negative\n"), "csv").examples] == ["negative"]
    other = write(tmp_path / "other.csv", "text,label\n$BTC up,1\nETH dumping,sideways\n")
    with pytest.raises(DataError, match=r"other.csv:3: label 'sideways' is not a TFNS label: .* and 2 \(neutral\)$"):
        load_examples(other, "tfns")  # no format reads it: none is suggested
    # The other way round: TFNS's numbers in a word-labelled CSV, or in JSON, where only a map reads them.
    with pytest.raises(DataError, match=r"numbers.csv:2: unknown label '2'; .*which --format tfns reads \(0=negative, 1=positive, 2=neutral\)"):
        load_examples(write(tmp_path / "numbers.csv", "text,label\nwen AMA,2\n"))
    with pytest.raises(DataError, match=r"n.jsonl:1: unknown label '0'; .*numbers need a --label-map"):
        load_examples(write(tmp_path / "n.jsonl", '{"text": "rekt", "label": 0}\n'))
    with pytest.raises(DataError, match=r"label '2' is not in the label map \(it maps 'b', 's'\)"):
        load_examples(write(tmp_path / "m.csv", "text,label\nwen AMA,2\n"), label_map=parse_label_map("b=positive,s=negative"))


def test_a_csv_given_as_json_says_it_reads_as_a_csv_and_which_format_reads_it(tmp_path):
    """`--format jsonl` (or a CSV named .jsonl) said only "invalid JSON: Expecting value", where
    --format tfns and csv name the format that reads what they cannot."""
    posts = write(tmp_path / "posts.jsonl", "text,label\n$BTC up,positive\n")
    hint = "; the line reads as a CSV row of 2 fields, so this is likely a CSV file"
    for fmt in ("jsonl", "auto", "alpaca"):
        with pytest.raises(DataError) as info:
            load_examples(posts, fmt)
        assert str(info.value) == f"{posts}:1: invalid JSON: Expecting value{hint}: --format csv reads it", fmt
    with pytest.raises(DataError) as info:
        load_examples(posts, "jsonl", flags=False)  # no --format to name
    assert str(info.value) == f"{posts}:1: invalid JSON: Expecting value{hint}, not JSON"
    skipped = load_examples(posts, "jsonl", skip_bad=True).skipped  # the hint once, on the first line
    assert [hint in str(e) for e in skipped] == [True, False]
    for first in ("{broken", "[1, 2", "not json at all"):  # JSON gone wrong, or one field: no CSV hint
        with pytest.raises(DataError) as info:
            load_examples(write(tmp_path / "bad.jsonl", first + "\n"), "jsonl")
        assert "CSV" not in str(info.value), str(info.value)
    quoted = write(tmp_path / "q.jsonl", '"text","label"\n')  # JSON reads a string, then "Extra data"
    with pytest.raises(DataError, match="Extra data; the line reads as a CSV row of 2 fields"):
        load_examples(quoted, "jsonl")


@pytest.mark.parametrize("fmt, header, missing", [("csv", "txt,lbl", "'text', 'label' columns"), ("tfns", "body,label", "'text' column")])
def test_a_header_without_the_text_or_label_column_is_fatal_even_with_skip_bad(tmp_path, fmt, header, missing):
    """Every row would lack the column: skipping them all would bury the cause under one skipped
    line per row and then "0 training examples". The header's line says it once, with what it holds."""
    f = write(tmp_path / "cols.csv", header + "\n" + "".join(f"row {i} btc up,1\n" for i in range(50)))
    for skip_bad in (False, True):
        with pytest.raises(DataError) as info:
            load_examples(f, fmt, skip_bad=skip_bad)
        assert info.value.line == 1 and info.value.reason == f"no {missing} in the header (it has {', '.join(repr(c) for c in header.split(','))})", info.value
    # --text-col / --label-col naming them reads the same file
    assert len(load_examples(f, "csv", text_col=header.split(",")[0], label_col=header.split(",")[1], label_map={"1": "positive"}).examples) == 50


def test_a_label_of_another_format_names_no_flag_where_the_command_has_none(tmp_path):
    """`sentinel splits --tfns`, its --research and `train-ngram --select` read a file with no
    --format or --label-map: the hint says what the label is, never a flag the command lacks."""
    words = write(tmp_path / "words.csv", "text,label\n$BTC up,1\nETH dumping,negative\n")
    with pytest.raises(DataError) as info:
        load_examples(words, "tfns", flags=False)
    assert str(info.value) == (f"{words}:3: label 'negative' is not a TFNS label: the tfns format reads 0 (negative: TFNS's Bearish), "
                               "1 (positive: Bullish) and 2 (neutral); 'negative' is a label word, so this is not TFNS's own file "
                               "(sent_train.csv), which is labelled in those numbers")
    numbers = write(tmp_path / "numbers.csv", "text,label\nwen AMA,2\n")
    with pytest.raises(DataError) as info:
        load_examples(numbers, "csv", flags=False)
    assert str(info.value) == f"{numbers}:2: unknown label '2'; expected one of {', '.join(LABELS)}"
    alpaca = tmp_path / "a.json"
    alpaca.write_text(json.dumps([{"instruction": "", "input": "wen AMA", "output": "2"}]), encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_examples(alpaca, "alpaca", flags=False)
    assert "--label-map" not in str(info.value) and "unknown label '2'" in str(info.value), str(info.value)


def test_a_spreadsheets_byte_order_mark_is_not_part_of_the_header_and_other_encodings_name_their_line(tmp_path):
    f = tmp_path / "excel.csv"
    f.write_bytes("text,label\n$BTC up,positive\n".encode("utf-8-sig"))  # Excel's "CSV UTF-8"
    assert [e.text for e in load_examples(f).examples] == ["$BTC up"]
    for name in ("latin.csv", "latin.jsonl"):
        f = tmp_path / name
        f.write_bytes(b'{"text": "ok", "label": "neutral"}\n{"text": "caf\xe9", "label": "neutral"}\n' if name.endswith("jsonl")
                      else b"text,label\nok,neutral\ncaf\xe9,neutral\n")
        with pytest.raises(DataError) as info:
            load_examples(f)
        assert str(info.value).endswith(("latin.csv:3: not UTF-8 text", "latin.jsonl:2: not UTF-8 text")), info.value
    f = tmp_path / "excel-latin.csv"  # the line is counted after the byte-order mark too
    f.write_bytes(b"\xef\xbb\xbftext,label\nok,neutral\ncaf\xe9,neutral\n")
    with pytest.raises(DataError, match="excel-latin.csv:3: not UTF-8 text"):
        load_examples(f)


def test_a_jsonl_line_holding_a_raw_line_separator_is_one_record(tmp_path):
    # JSON writers leave U+2028 raw inside strings (ensure_ascii=False); str.splitlines() broke the line there.
    f = write(tmp_path / "d.jsonl", json.dumps({"text": "moon\u2028soon", "label": "positive"}, ensure_ascii=False) + "\n")
    assert [(e.text, e.line) for e in load_examples(f, "jsonl").examples] == [("moon\u2028soon", 1)]


def test_malformed_jsonl_rows_are_skipped_and_counted_with_skip_bad(tmp_path):
    f = write(tmp_path / "bad.jsonl", '{"text": "a", "label": "positive"}\nnot json\n{"text": 5, "label": "positive"}\n{"label": "neutral"}\n')
    result = load_examples(f, "jsonl", skip_bad=True)
    assert len(result.examples) == 1
    assert [(e.line, e.reason.split()[0]) for e in result.skipped] == [(2, "invalid"), (3, "'text'"), (4, "missing")]


def test_bad_label_map_spec_names_the_flag_and_the_entry():
    with pytest.raises(ValueError, match=r"^--label-map 0:negative: not RAW=LABEL$"):
        parse_label_map("0:negative")
    with pytest.raises(ValueError) as info:
        parse_label_map("0=negative,1=positive, 2=nuetral")
    assert str(info.value) == f"--label-map 2=nuetral: unknown label 'nuetral'; expected one of {', '.join(LABELS)}"
    # An empty RAW and a repeated one were taken silently (the repeat's last entry won).
    with pytest.raises(ValueError, match=r"^--label-map =neutral: empty RAW "):
        parse_label_map("0=negative,=neutral")
    with pytest.raises(ValueError, match=r"^--label-map 2=positive: '2' is mapped twice \(also 2=neutral\)$"):
        parse_label_map("2=neutral, 2=positive")
    assert parse_label_map(" 0 = negative ,1=positive") == {"0": "negative", "1": "positive"}


def test_seed_discord_reproduces_the_research_labelling(tmp_path):
    export = write(tmp_path / "export.csv", (
        "AuthorID,Author,Date_original,Date,Content,Attachments,Reactions,Preprocessed\n"
        "1.1e+17,a,x,x,gm,,,\n"
        "2.2e+17,b,x,x,\"rekt\nagain\",,,\n"
        "1.1e+17,a,x,x,wagmi,,,\n"
        "3.3e+17,c,x,x," + "long " * 60 + ",,,\n"
        "4.4e+17,d,x,x,hello,,,\n"
        "5.5e+17,e,x,x,no score,,,\n"
    ))
    write(tmp_path / "meritcircle_user_sentiment.csv", "AuthorID,Average_Sentiment_Score\n1.1e+17,0.4\n2.2e+17,-0.1\n3.3e+17,0.9\n4.4e+17,0\n")
    ex = load_examples(export, "seed-discord").examples
    assert [(e.text, e.label, e.line) for e in ex] == [("gm; wagmi;", "positive", 2), ("rekt\nagain;", "negative", 3), ("hello;", "neutral", 7)]


def test_seed_discord_without_its_scores_file_says_which_it_needs(tmp_path):
    export = write(tmp_path / "export.csv", "Username,Content,Date_original\n")
    with pytest.raises(ValueError, match="meritcircle_user_sentiment.csv: not found; seed-discord needs .* or --scores"):
        load_examples(export, "seed-discord")


def test_a_score_file_is_taken_from_anywhere_for_seed_discord_and_refused_for_other_formats(tmp_path):
    export = write(tmp_path / "export.csv", "AuthorID,Author,Date_original,Date,Content,Attachments,Reactions,Preprocessed\n1,a,x,x,gm,,,\n")
    scores = write(tmp_path / "elsewhere.csv", "AuthorID,Average_Sentiment_Score\n1,-0.4\n")
    assert [(e.text, e.label) for e in load_examples(export, "seed-discord", scores_path=scores).examples] == [("gm;", "negative")]
    with pytest.raises(ValueError, match="read only with the seed-discord format, not csv"):  # it labelled nothing, silently
        load_examples(export, "csv", scores_path=scores)


def test_seed_discord_bad_score_row_names_its_line(tmp_path):
    export = write(tmp_path / "export.csv", "AuthorID,Author,Date_original,Date,Content,Attachments,Reactions,Preprocessed\n1,a,x,x,gm,,,\n")
    write(tmp_path / "meritcircle_user_sentiment.csv", "AuthorID,Average_Sentiment_Score\n1,0.4\n2,lots\n")
    with pytest.raises(DataError, match="meritcircle_user_sentiment.csv:3"):
        load_examples(export, "seed-discord")
    assert len(load_examples(export, "seed-discord", skip_bad=True).skipped) == 1


def test_seed_discord_on_the_real_export_matches_most_of_dataset_json():
    from conftest import shared_file

    export = shared_file("seed", "meritcircle_cleaned_discord.csv")
    ours = {e.text: e.label for e in load_examples(export, "seed-discord").examples}
    from model.prompt import clean_text

    research = {clean_text(r["input"]): r["output"].lower() for r in json.loads(shared_file("seed", "dataset.json").read_text())}
    common = set(ours) & set(research)
    # Measured: 622 of the research's 800 distinct texts are rebuilt exactly, and 97.7% of those get
    # the research's label. Our rule yields 1,705 examples where the research kept 981: its pipeline
    # filtered further in ways the export does not record.
    assert len(common) >= 0.75 * len(research)
    agree = sum(ours[t] == research[t] for t in common) / len(common)
    assert agree >= 0.95, agree


DEEP = "[" * 100_000 + "]" * 100_000
OK = '{"text": "btc up", "label": "positive"}'


@pytest.mark.parametrize("name, content, line, reason", [
    ("deep.jsonl", f"{OK}\n{DEEP}\n{OK}\n", 2, "invalid JSON: nested too deeply"),
    ("digits.jsonl", f'{OK}\n{{"text": "b", "label": {"9" * 5000}}}\n{OK}\n', 2, "invalid JSON: Exceeds the limit (4300 digits)"),
    ("surrogate.jsonl", f'{OK}\n{{"text": "\\ud800 btc", "label": "positive"}}\n{OK}\n', 2, "text holds an unpaired surrogate"),
    ("array-first.jsonl", f'[{OK}]\n{OK}\n', 1, "expected an object, got list"),
    ("long-label.csv", f"text,label\nbtc,positive\neth,{'9' * 5000}\n", 3, "'label' is 5000 characters long, not a label"),
])
def test_a_hostile_row_is_its_own_line_error_and_skip_bad_reads_on(tmp_path, name, content, line, reason):
    f = write(tmp_path / name, content)
    with pytest.raises(DataError) as info:
        load_examples(f)
    assert info.value.line == line and info.value.reason.startswith(reason), info.value
    result = load_examples(f, skip_bad=True)
    assert [e.line for e in result.skipped] == [line]
    assert len(result.examples) == {"array-first.jsonl": 1, "long-label.csv": 1}.get(name, 2)


def test_a_deeply_nested_alpaca_file_is_an_error_naming_it(tmp_path):
    f = write(tmp_path / "deep.json", DEEP)
    with pytest.raises(DataError, match=r"deep.json:1: invalid JSON: nested too deeply"):
        load_examples(f, skip_bad=True)


def test_a_csv_field_over_the_csv_modules_default_limit_is_a_row(tmp_path):
    f = write(tmp_path / "long.csv", f"text,label\n{'x' * 200_000},positive\nok,negative\n")
    assert [(len(e.text) > 1000, e.line) for e in load_examples(f).examples] == [(True, 2), (False, 3)]


@pytest.mark.parametrize("row, line", [('"eth down,negative', 5), ('eth down,"negative', 5), ('"eth ""down"", and up,negative', 5)])
def test_a_quote_never_closed_is_fatal_even_with_skip_bad(tmp_path, row, line):
    rows = ["text,label", *(f"row {i} btc up,positive" for i in range(1000))]
    rows[4] = row
    f = write(tmp_path / "quote.csv", "\n".join(rows) + "\n")
    for skip_bad in (False, True):
        with pytest.raises(DataError) as info:
            load_examples(f, skip_bad=skip_bad)
        assert (info.value.line, info.value.reason.split(" (")[0]) == (line, "a quote opened here is never closed")


@pytest.mark.parametrize("fmt, header, label", [("tfns", "text,label", "1"), ("csv", "label,text,source", "positive")])
def test_a_stray_quote_closed_rows_later_is_fatal_even_with_skip_bad(tmp_path, fmt, header, label):
    """The quote on line 5 is closed only by the stray one on line 301: the csv module reads the
    296 rows between as one text, of the right width, and nothing else would say so."""
    def row(text: str) -> str:
        return f"{text},{label}" if fmt == "tfns" else f"{label},{text},x"

    rows = [header, *(row(f"row {i} btc up") for i in range(1000))]
    rows[4] = row('"eth down')
    rows[300] = row('sol "flat')
    f = write(tmp_path / "stray.csv", "\n".join(rows) + "\n")
    for skip_bad in (False, True):
        with pytest.raises(DataError) as info:
            load_examples(f, fmt, skip_bad=skip_bad)
        assert info.value.line == 5
        assert info.value.reason.startswith("a quote opened here runs on over line 6, which reads as a row of its own"), info.value


def test_multi_line_texts_whose_lines_hold_commas_or_labels_are_fine(tmp_path):
    """A line inside a quoted text is a row only when it is, on its own, a whole row with a label:
    not `AAPL, MSFT` (no label), not `1,2,3` (three fields), not the text's last line `up 3%",1`
    (its quote closes the text)."""
    f = write(tmp_path / "t.csv", 'text,label\n"Top movers:\nAAPL, MSFT\nup 3%",1\n"said ""sell"",\n1,2,3\nthen left",0\nok,2\n')
    assert [(e.line, e.label) for e in load_examples(f, "tfns").examples] == [(2, "positive"), (5, "negative"), (8, "neutral")]


def test_quoted_fields_spanning_lines_to_the_end_of_the_file_are_fine(tmp_path):
    f = write(tmp_path / "multi.csv", 'text,label\nbtc up,positive\n"eth\n""down""\nhard",negative\n"sol, flat",neutral')
    assert [(e.line, e.label) for e in load_examples(f).examples] == [(2, "positive"), (3, "negative"), (6, "neutral")]
