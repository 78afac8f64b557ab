"""The Discord export import: the garbled AM/PM and emoji repair, multi-line contents, stable unique ids."""

import json
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from training.discord import ImportReport, discord_posts, parse_discord_time, repair_mojibake

AM = "上午".encode("utf-8").decode("latin-1")  # how the export stores the marker
PM = "下午".encode("utf-8").decode("latin-1")


def garble(text: str) -> str:
    """How the export stores text: UTF-8 read back as Latin-1."""
    return text.encode("utf-8").decode("latin-1")


def test_repair_mojibake():
    assert repair_mojibake(f"2022/2/14 {AM}9:12") == "2022/2/14 上午9:12"
    assert repair_mojibake("plain ascii") == "plain ascii"
    assert repair_mojibake("already 上午") == "already 上午"
    assert repair_mojibake(garble("Congrats 👏 ❤️ MC’s pump")) == "Congrats 👏 ❤️ MC’s pump"


def test_genuine_latin_1_text_is_left_alone():
    for text in ("café at 5€", "naïve señor", "ðe old spelling", "1 ETH ≈ 2k · ok", "déjà vu 😂"):
        assert repair_mojibake(text) == text


def test_an_emoji_that_lost_its_last_byte_is_dropped_and_none_is_invented():
    """The export lost the last byte of some emoji; the rest of the message is still repaired, and
    the space after the stump is not read as that byte (which would make 😂 + stump + space a 😠)."""
    stump = garble("😂")[:-1]
    assert repair_mojibake(f"Naol may jowa {stump}") == "Naol may jowa "
    assert repair_mojibake(f"Sir tips {garble('😂')}{stump} ok") == "Sir tips 😂 ok"
    assert repair_mojibake(f"thanks {garble('❤')[:-1]}") == "thanks "


@pytest.mark.parametrize(
    "raw,expected",
    [
        (f"2022/2/14 {AM}9:12", datetime(2022, 2, 14, 9, 12, tzinfo=timezone.utc)),
        (f"2022/2/14 {PM}9:12", datetime(2022, 2, 14, 21, 12, tzinfo=timezone.utc)),
        (f"2022/2/14 {AM}12:05", datetime(2022, 2, 14, 0, 5, tzinfo=timezone.utc)),
        (f"2022/2/14 {PM}12:05", datetime(2022, 2, 14, 12, 5, tzinfo=timezone.utc)),
        ("2022/12/1 下午1:00", datetime(2022, 12, 1, 13, 0, tzinfo=timezone.utc)),
    ],
)
def test_am_pm_times(raw, expected):
    assert parse_discord_time(raw) == expected


def test_bad_time():
    with pytest.raises(ValueError):
        parse_discord_time("yesterday")


def write_export(path, rows):
    import csv

    with path.open("w", encoding="utf-8", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["AuthorID", "Author", "Date_original", "Date", "Content", "Attachments", "Reactions", "Preprocessed"])
        w.writerows(rows)


def test_import_fixture(tmp_path):
    f = tmp_path / "export.csv"
    write_export(f, [
        ["3.03515e+17", "alice", f"2022/2/14 {PM}9:12", "2022/2/14", "MC to the moon\nsecond line", "", "", ""],
        ["3.03515e+17", "alice", f"2022/2/14 {PM}9:12", "2022/2/14", "gm", "", "", ""],
        ["3.03515e+17", "alice", f"2022/2/14 {PM}9:12", "2022/2/14", "gm", "", "", ""],
        ["7.35347e+17", "bob", f"2022/2/14 {AM}9:14", "2022/2/14", "", "img.png", "", ""],
        ["7.35347e+17", "bob", "garbage", "2022/2/14", "hello", "", "", ""],
    ])
    report = ImportReport()
    posts = list(discord_posts(f, report))
    assert [p["text"] for p in posts] == ["MC to the moon\nsecond line", "gm", "gm"]
    assert posts[0]["created_at"] == "2022-02-14T21:12:00Z" and posts[0]["source"] == "discord"
    assert len({p["id"] for p in posts}) == 3 and posts[2]["id"] == posts[1]["id"] + "-2"
    assert [p["id"] for p in discord_posts(f, ImportReport())] == [p["id"] for p in posts]  # stable
    assert [(line, reason.split(":")[0]) for line, reason in report.failed] == [(6, "empty_content"), (7, "bad_time")]


def test_import_repairs_the_text_but_keys_the_stored_content(tmp_path):
    """Label files name messages by id: the repair must not change an id, only the text."""
    import hashlib

    f = tmp_path / "export.csv"
    stored = garble("MC to the moon 🚀🚀")
    write_export(f, [["3.03515e+17", "alice", f"2022/2/14 {PM}9:12", "2022/2/14", stored, "", "", ""]])
    [post] = discord_posts(f, ImportReport())
    assert post["text"] == "MC to the moon 🚀🚀"
    digest = hashlib.sha1(f"alice\x1f2022-02-14T21:12:00Z\x1f{stored}".encode()).hexdigest()[:16]
    assert post["id"] == f"discord-{digest}"
    # repair=False: the text the id hashes, for finding the messages the repair changed.
    [as_stored] = discord_posts(f, ImportReport(), repair=False)
    assert (as_stored["id"], as_stored["text"]) == (post["id"], stored)


def test_an_emoji_ending_a_message_is_kept_though_its_last_byte_reads_as_a_space(tmp_path):
    """Read as Latin-1, the last byte of 😅 (0x85) or 🎅 (0xA0) is a next-line or no-break space: a
    strip before the repair cut it, and the emoji was dropped as if the export had lost it. The id
    still hashes the stored content stripped, as before, so every label keeps its key."""
    import hashlib

    f = tmp_path / "export.csv"
    rows = [["3.03515e+17", "alice", f"2022/2/14 {PM}9:12", "2022/2/14", garble(text), "", "", ""]
            for text in ("Naol may jowa 😅", "🎅", "MC dump 😠 ")]
    write_export(f, rows)
    posts = list(discord_posts(f, ImportReport()))
    assert [p["text"] for p in posts] == ["Naol may jowa 😅", "🎅", "MC dump 😠"]
    digest = hashlib.sha1(f"alice\x1f2022-02-14T21:12:00Z\x1f{garble('Naol may jowa 😅').strip()}".encode()).hexdigest()[:16]
    assert posts[0]["id"] == f"discord-{digest}"


def test_import_cli_on_the_real_export(tmp_path):
    from conftest import shared_file

    src = shared_file("seed", "meritcircle_cleaned_discord.csv")
    out = tmp_path / "posts.jsonl"
    r = subprocess.run([sys.executable, "-m", "sentinel.cli", "import-discord", str(src), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    posts = [json.loads(line) for line in out.read_text(encoding="utf-8").split("\n") if line]
    assert len(posts) > 30_000 and len({p["id"] for p in posts}) == len(posts)
    assert "rows not converted" in r.stdout and "empty_content" in r.stdout
    hours = {p["created_at"][11:13] for p in posts}
    assert len(hours) > 12  # PM times were repaired: not everything lands in the morning


def test_a_quote_never_closed_is_an_error_naming_its_line_not_a_merged_post(tmp_path):
    f = tmp_path / "export.csv"
    rows = [["1", "alice", f"2022/2/14 {PM}9:{m:02d}", "2022/2/14", f"msg {m}", "", "", ""] for m in range(50)]
    write_export(f, rows)
    lines = f.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[3] = lines[3].replace("msg 2", '"msg 2', 1)  # the export's row 3, file line 4
    f.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(ValueError, match=r"export.csv:4: a quote opened here is never closed"):
        list(discord_posts(f, ImportReport()))


def test_a_stray_quote_closed_rows_later_is_an_error_naming_its_line_not_a_merged_post(tmp_path):
    """A message that begins with a quote opens a quoted field that the next stray quote closes,
    rows on: every row between would be one post's text, said nowhere."""
    f = tmp_path / "export.csv"
    rows = [["1", "alice", f"2022/2/14 {PM}9:{m:02d}", "2022/2/14", f"msg {m}", "", "", ""] for m in range(50)]
    write_export(f, rows)
    lines = f.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[3] = lines[3].replace("msg 2", '"msg 2', 1)  # the export's row 3, file line 4
    lines[30] = lines[30].replace("msg 29", 'msg 29"', 1)  # closes it, 27 rows on
    f.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(ValueError, match=r"export.csv:4: a quote opened here runs on over line 5, which reads as a row of its own"):
        list(discord_posts(f, ImportReport()))


def test_multi_line_messages_with_commas_numbers_and_dates_are_converted(tmp_path):
    """What a real message's lines hold (a list, a price, a date) is not the start of a row: only a
    line that starts with an id, an author and a date is."""
    f = tmp_path / "export.csv"
    texts = ["wen moon?\n1,2,3 go\n2022/2/14 was the day", '"quoted" reply\nETH, 3000,2022/2/14\nok', "gm\n\n,,\nend"]
    write_export(f, [["1", "alice", f"2022/2/14 {PM}9:{m:02d}", "2022/2/14", text, "", "", ""] for m, text in enumerate(texts)])
    report = ImportReport()
    assert [p["text"] for p in discord_posts(f, report)] == texts and not report.failed


def test_a_row_short_of_fields_or_without_visible_text_is_not_converted(tmp_path):
    f = tmp_path / "export.csv"
    write_export(f, [
        ["1", "alice", f"2022/2/14 {PM}9:12", "2022/2/14", "gm", "", "", ""],
        ["1", "alice", f"2022/2/14 {PM}9:13"],  # no Content column at all
        ["1", "alice", f"2022/2/14 {PM}9:14", "2022/2/14", "\u200b\u200d\x07", "", "", ""],  # invisible and control only
        ["1", "alice", f"2022/2/14 {PM}9:15", "2022/2/14", "ð\x9f\x91", "", "", ""],  # an emoji that lost its last byte: nothing once repaired
        ["1", "alice", f"2022/2/14 {PM}9:16", "2022/2/14", "wagmi", "", "", ""],
    ])
    report = ImportReport()
    assert [p["text"] for p in discord_posts(f, report)] == ["gm", "wagmi"]
    assert [(line, reason.split(":")[0]) for line, reason in report.failed] == [(3, "wrong_fields"), (4, "empty_content"), (5, "empty_content")]
    assert report.failed[0][1] == "wrong_fields: expected 8 fields, got 3"
    assert "no visible text" in report.failed[1][1] and "no visible text" in report.failed[2][1]


def test_a_content_over_the_csv_modules_default_field_limit_is_read(tmp_path):
    f = tmp_path / "export.csv"
    write_export(f, [["1", "alice", f"2022/2/14 {PM}9:12", "2022/2/14", "x" * 200_000, "", "", ""]])
    assert [len(p["text"]) for p in discord_posts(f, ImportReport())] == [200_000]
