"""Malformed mail is stored as well as it can be and never raises."""

from __future__ import annotations

from pathlib import Path

from plugins.mail.parsing import message_key, parse

SAMPLES = Path(__file__).parent / "samples"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def test_koi8r_raw_8bit_headers_are_guessed() -> None:
    parsed = parse(sample("koi8r_raw_headers.eml"))
    assert parsed.subject == "Тема письма: счёт на оплату"
    assert parsed.from_name == "Иван Петров"
    assert parsed.from_addr == "ivan@koi.example.ru"
    assert "Высылаю счёт" in parsed.text_body


def test_cp1251_headers_and_unknown_body_charset() -> None:
    parsed = parse(sample("cp1251_raw_headers.eml"))
    assert parsed.subject == "Коммерческое предложение"
    assert parsed.from_name == "Ольга"
    assert parsed.text_body.strip() == "Цены во вложении."
    assert any("x-unknown-charset" in e for e in parsed.errors)


def test_encoded_words_with_bogus_charset_and_bad_date() -> None:
    parsed = parse(sample("encoded_word_unknown_charset.eml"))
    assert parsed.from_name == "Сергей"
    assert "привет" in parsed.subject and "hello" in parsed.subject
    assert any("Date" in e for e in parsed.errors)
    assert parsed.sent_at is not None


def test_broken_mime_keeps_text_and_attachment() -> None:
    parsed = parse(sample("broken_mime.eml"))
    assert "The text survives." in parsed.text_body
    assert [a.filename for a in parsed.attachments] == ["scan.pdf"]
    assert parsed.errors  # the defects are reported, not hidden


def test_missing_message_id_gets_a_stable_synthetic_one() -> None:
    raw = sample("no_message_id.eml")
    first, again = parse(raw), parse(b"Received: from relay2\r\n" + raw)
    assert first.synthetic_id and first.message_id.endswith("kartoteka.invalid>")
    assert first.key == again.key, "same mail via another route: same key"
    assert parse(raw.replace(b"without", b"with no")).key != first.key


def test_message_key_ignores_whitespace_and_comments() -> None:
    assert message_key("<a@b>") == message_key("  <a@b> (comment)")


def test_garbage_never_raises() -> None:
    for raw in (
        b"",
        b"\x00\xff\xfe",
        b"Subject: x\r\n",
        b"Content-Type: multipart/mixed\r\n\r\n--",
    ):
        parse(raw)
