"""`factgpt data download`: the study's four files, checked against their SHA-256 sums.

Each file is fetched whole into memory (the largest is 420 kB), its sum checked, then written
atomically; a file whose sum is wrong is never written, so nothing half-good is left behind.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from factgpt.errors import FactgptError
from factgpt.outputs import atomic_write_bytes, ensure_folder

BASE_URL = "https://raw.githubusercontent.com/parachutel/cs224n-stanford-winter2021/main/a5/"

FILES = {  # name -> sha256 (from ../shared/data/README.md)
    "wiki.txt": "823bb536fca77c8b5a15b34b0dead6355d0cf1f806e822464bca28806c2fd055",
    "birth_places_train.tsv": "02364dfca78e23d2583a19f03a2d8cddd90ee3e1a3795ddec7f0addadea30b0d",
    "birth_dev.tsv": "101a56073eba0db9aad5e2aaf1aa9bf8bdae966ae3aaed8fc8cda5edfa7856da",
    "birth_test_inputs.tsv": "5ccd3b2a1682e0daf90d59488aef8805ef21b9d35795cc3bdabdea79d293aa1f",
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def have_data(dest: str | Path) -> bool:
    """True when every file is in `dest` with the right sum."""
    dest = Path(dest)
    return all((dest / n).is_file() and sha256((dest / n).read_bytes()) == s for n, s in FILES.items())


def download(dest: str | Path, base_url: str = BASE_URL, timeout: float = 60.0) -> list[Path]:
    """Fetch the files missing or wrong in `dest`; return the paths written."""
    dest = ensure_folder(dest)
    written = []
    for name, expected in FILES.items():
        target = dest / name
        if target.is_file() and sha256(target.read_bytes()) == expected:
            continue
        url = base_url.rstrip("/") + "/" + name
        if urllib.parse.urlsplit(url).scheme == "":  # urlopen's own error would be a ValueError traceback
            raise FactgptError("not a URL: it names no scheme", path=url,
                               hint="give --base-url as https://... or file:///...")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                data = r.read()
        except urllib.error.HTTPError as e:
            raise FactgptError(f"download failed: HTTP {e.code}", path=url,
                               hint="check --base-url") from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise FactgptError(f"download failed: {reason}", path=url,
                               hint="check the network or --base-url") from None
        got = sha256(data)
        if got != expected:
            raise FactgptError(f"SHA-256 mismatch (got {got[:12]}…, expected {expected[:12]}…); "
                               "nothing was written", path=url,
                               hint="the copy at this address is not the study's file")
        atomic_write_bytes(target, data)
        written.append(target)
    return written
