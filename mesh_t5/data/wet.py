"""Common Crawl WET files: read their text ('conversion') records, and write small ones for tests.

A WET file is a gzip'd WARC file (one gzip member per record) whose `conversion` records hold the
plain text that Common Crawl extracted from a page, with `WARC-Target-URI` and `WARC-Date` headers.
Parsing is fastwarc's; decompression is Python's gzip, because fastwarc's own reader stops silently
at a truncated member, while `gzip` raises, and a truncated download must be seen and counted.

No Beam here: `c4_beam` calls `read_pages` inside a DoFn; tests and benchmarks call `write_wet_file`.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import re
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any


@dataclasses.dataclass(frozen=True)
class Page:
    """A web page's text as C4 keeps it (TFDS c4_utils' PageFeatures, minus content type/length)."""

    url: str
    timestamp: str  # WARC-Date, ISO 8601 ("2019-04-26T12:04:15Z"): compared as a string for "newest"
    text: str

    @property
    def normalized_url(self) -> str:
        return normalize_url(self.url)


def normalize_url(url: str) -> str:
    """Returns the URL without scheme, "www.", tracking query and trailing slash (TFDS's key for URL dedup)."""
    url = re.sub(r"https?:\/\/(www\.)?", "", url)
    url = re.sub(r"\?(utm_|ref|feed).*", "", url)
    return url.rstrip("/")


def url_hash(url: str) -> int:
    """Returns md5 of the normalised URL as an integer: TFDS c4's split and sampling hash."""
    return int(hashlib.md5(normalize_url(url).encode("utf-8")).hexdigest(), 16)


def is_validation(url: str) -> bool:
    """True for the 0.1% of pages TFDS c4 puts in `validation` (md5(normalized url) % 1000 == 0)."""
    return url_hash(url) % 1000 == 0


class BadWetFile(Exception):
    """The file is not a readable gzip'd WARC file; `kind` names why (not-gzip, not-warc, truncated-gzip)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class _TruncationGuard:
    """A read-only stream over a GzipFile that ends (and remembers it) where the gzip data is cut short."""

    def __init__(self, g: gzip.GzipFile):
        self.g, self.truncated, self.position = g, False, 0

    def read(self, n: int = -1) -> bytes:
        # read1 steps through one decompressed block at a time, so the blocks before the cut are kept
        # (GzipFile.read(n) would drop everything of a call that meets the cut).
        chunks, size = [], 0
        while not self.truncated and (n < 0 or size < n):
            try:
                chunk = self.g.read1(n - size if n >= 0 else 1 << 16)
            except (EOFError, zlib.error):
                self.truncated = True
                break
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        self.position += size
        return b"".join(chunks)

    def tell(self) -> int:  # fastwarc records each record's offset
        return self.position


def read_pages(
    stream: IO[bytes], where: str, on_bad_record: Callable[[str, str], None] | None = None
) -> Iterator[Page]:
    """Yields the conversion records of the gzip'd WARC `stream` as Pages.

    A record with invalid UTF-8 or without URL/date/text is passed to `on_bad_record(reason, where)`
    and skipped. A stream that is not gzip or not WARC raises BadWetFile; one cut short yields the
    complete records that could be decompressed before the cut, then raises BadWetFile.
    """
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    report = on_bad_record or (lambda reason, at: None)
    try:
        with gzip.GzipFile(fileobj=stream, mode="rb") as g:
            guard = _TruncationGuard(g)
            records = ArchiveIterator(guard, record_types=WarcRecordType.conversion, parse_http=False)
            for n, record in enumerate(records):
                url = record.headers.get("WARC-Target-URI", "")
                at = f"{where} record {n} ({url or 'no URL'})"
                body = record.reader.read()
                if len(body) < record.content_length:  # cut short: the file's damage, reported below
                    break
                try:
                    text = body.decode("utf-8")
                except UnicodeDecodeError:
                    report("invalid-utf8", at)
                    continue
                timestamp = record.headers.get("WARC-Date", "")
                if not url or not timestamp or not text.strip():
                    report("no-url" if not url else "no-timestamp" if not timestamp else "no-text", at)
                    continue
                yield Page(url, timestamp, text)
    except gzip.BadGzipFile:
        raise BadWetFile("not-gzip", "not a gzip file") from None
    except OSError as e:  # fastwarc: "Invalid WARC header"
        raise BadWetFile("not-warc", f"not a WARC file ({e})") from None
    if guard.truncated:
        raise BadWetFile("truncated-gzip", "truncated gzip")


def warc_record(page: Page | tuple[str, str, Any], record_type: str = "conversion") -> bytes:
    """Returns one gzip member holding a WARC/1.0 record of `page` (text str, or raw bytes)."""
    url, timestamp, text = dataclasses.astuple(page) if isinstance(page, Page) else page
    body = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    record_id = uuid.UUID(bytes=hashlib.md5(f"{url} {timestamp}".encode()).digest())
    head = (
        f"WARC/1.0\r\nWARC-Type: {record_type}\r\nWARC-Target-URI: {url}\r\nWARC-Date: {timestamp}\r\n"
        f"WARC-Record-ID: <urn:uuid:{record_id}>\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return gzip.compress(head + body + b"\r\n\r\n", mtime=0)


def write_wet_file(path: str, pages: Iterable[Page | tuple[str, str, Any]]) -> None:
    """Writes a WET file as Common Crawl does: a warcinfo record, then one conversion record per page."""
    info = ("", "2019-04-18T00:00:00Z", "software: mesh_t5 wet.write_wet_file\r\n")
    with open(path, "wb") as f:
        f.write(warc_record(info, record_type="warcinfo"))
        for page in pages:
            f.write(warc_record(page))
