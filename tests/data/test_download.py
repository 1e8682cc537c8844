"""Downloads against a local HTTP server on 127.0.0.1 only (never the internet)."""

import hashlib
import io
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pixelwise.data import download as dl
from pixelwise.errors import DataError

PAYLOAD = bytes(range(256)) * 400  # 102400 bytes
SHA256 = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()


class Server:
    """Serves `files` at /name with Range support; can cut the first transfer short or
    ignore Range. Records the Range header of every request."""

    def __init__(self, files):
        self.files, self.ranges, self.cut_first_at, self.ignore_range = files, [], None, False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = owner.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                header = self.headers.get("Range")
                owner.ranges.append(header)
                start = int(header[6:-1]) if header and not owner.ignore_range else 0
                if start >= len(body) and header:
                    self.send_error(416)
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if owner.cut_first_at is not None:  # send part of it, then drop the connection
                    self.wfile.write(body[start : owner.cut_first_at])
                    owner.cut_first_at = None
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture
def server():
    running = Server({"data.bin": PAYLOAD})
    yield running
    running.httpd.shutdown()
    running.httpd.server_close()


def test_download_checks_sha256_and_skips_a_verified_file(server, tmp_path):
    path = dl.download(f"{server.url}/data.bin", tmp_path / "data.bin", SHA256, progress=False)
    assert path.read_bytes() == PAYLOAD
    dl.download(f"{server.url}/data.bin", tmp_path / "data.bin", SHA256, progress=False)
    assert len(server.ranges) == 1  # the second call found the verified file


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    server.cut_first_at = 30000
    dest = tmp_path / "data.bin"
    with pytest.raises(DataError, match="must complete.*resumes from the 30000 bytes"):
        dl.download(f"{server.url}/data.bin", dest, SHA256, progress=False)
    assert (tmp_path / "data.bin.part").stat().st_size == 30000 and not dest.exists()
    dl.download(f"{server.url}/data.bin", dest, SHA256, progress=False)
    assert server.ranges == [None, "bytes=30000-"]
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "data.bin.part").exists()


def test_server_ignoring_range_restarts_the_file(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(b"stale bytes")
    server.ignore_range = True
    dl.download(f"{server.url}/data.bin", tmp_path / "data.bin", SHA256, progress=False)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_complete_part_file_is_verified_without_refetching(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)
    dl.download(f"{server.url}/data.bin", tmp_path / "data.bin", SHA256, progress=False)
    assert server.ranges == [f"bytes={len(PAYLOAD)}-"]  # answered 416: nothing left
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_checksum_mismatch_deletes_the_file_and_says_so(server, tmp_path):
    wrong = "md5:" + "0" * 32
    with pytest.raises(DataError, match=f"must have checksum {wrong}, got md5:"):
        dl.download(f"{server.url}/data.bin", tmp_path / "data.bin", wrong, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_md5_checksums_are_accepted(server, tmp_path):
    md5 = "md5:" + hashlib.md5(PAYLOAD).hexdigest()
    dl.download(f"{server.url}/data.bin", tmp_path / "data.bin", md5, progress=False)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_missing_file_is_a_data_error(server, tmp_path):
    with pytest.raises(DataError, match="HTTPError"):
        dl.download(f"{server.url}/nothing", tmp_path / "x", progress=False)


def tar_bytes(members):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zip_bytes(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize("pack", [tar_bytes, zip_bytes])
def test_extract_unpacks_tar_and_zip(tmp_path, pack):
    archive = tmp_path / "a.bin"
    archive.write_bytes(pack({"top/inner/x.txt": b"hello"}))
    dl.extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "top" / "inner" / "x.txt").read_bytes() == b"hello"


@pytest.mark.parametrize("pack", [tar_bytes, zip_bytes])
def test_extract_refuses_members_escaping_the_folder(tmp_path, pack):
    archive = tmp_path / "evil.bin"
    archive.write_bytes(pack({"../escaped.txt": b"x"}))
    with pytest.raises(DataError, match="must stay inside"):
        dl.extract(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()


def test_download_dataset_fetches_unpacks_and_returns_the_root(tmp_path, monkeypatch):
    archive = tar_bytes({"VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt": b"a\n"})
    running = Server({"voc.tar": archive})
    try:
        entry = dl.CatalogueEntry(
            "voc",
            (
                dl.Resource(
                    f"{running.url}/voc.tar",
                    "voc.tar",
                    "sha256:" + hashlib.sha256(archive).hexdigest(),
                ),
            ),
            "VOCdevkit/VOC2012",
        )
        monkeypatch.setitem(dl.CATALOGUE, "voc", entry)
        root = dl.download_dataset("voc", tmp_path, progress=False)
    finally:
        running.httpd.shutdown()
        running.httpd.server_close()
    assert root == tmp_path / "VOCdevkit" / "VOC2012"
    assert (root / "ImageSets" / "Segmentation" / "train.txt").read_text() == "a\n"


def test_catalogue_names_each_supported_dataset_with_a_root_for_its_kind():
    assert set(dl.CATALOGUE) == {"camvid", "isbi2012", "voc"}
    for name, entry in dl.CATALOGUE.items():
        assert entry.kind == name and entry.resources
        assert all(r.url.startswith(("http://", "https://")) for r in entry.resources)
    assert dl.CATALOGUE["voc"].resources[0].checksum == "md5:6cd6e144f989b92b3379bac3b3de84fd"
