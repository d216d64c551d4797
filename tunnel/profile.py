"""The identity: long-term key pair, nospam, friends and saved peers, in toxcore's save format.

A :class:`Profile` wraps a :class:`~tunnel.wire.savedata.SaveData` (tox-protocol.md section 10),
so a profile file is interchangeable with an unencrypted c-toxcore 0.2.18 client profile.
Files are always written atomically (temporary file in the same directory, fsync, rename) with
mode 0600: the secret key is in them. Problems reading a file are one-line
:class:`~tunnel.errors.ConfigError` messages naming the path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import tempfile
from pathlib import Path

from tunnel.crypto.keys import KeyPair, Rng
from tunnel.errors import BadPacket, ConfigError
from tunnel.toxid import NOSPAM_SIZE, ToxId
from tunnel.wire.savedata import SaveData, SavedFriend, decode_savedata_untrusted

PROFILE_FILE_MODE = 0o600
PROFILE_DIR_MODE = 0o700
MAX_PROFILE_SIZE_BYTES = 64 * 1024 * 1024
"""Refuse to read anything larger (a profile with 10,000 friends is about 22 MB)."""
TOX_ENCRYPTED_SAVE_MAGIC = b"toxEsave"
"""toxencryptsave's header: such profiles need a passphrase we do not support."""


def write_file_atomic(
    path: Path, data: bytes, mode: int = PROFILE_FILE_MODE, *, overwrite: bool = True
) -> None:
    """Replace ``path`` with ``data`` atomically: temp file in the same directory, fsync, rename.

    With ``overwrite=False`` the temp file is hard-linked into place instead, which fails with
    ``FileExistsError`` if ``path`` appeared meanwhile. Missing parent directories are created
    with mode 0700.

    Raises:
        OSError: the directory or file cannot be written (``FileExistsError``: see above).
    """
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=PROFILE_DIR_MODE)
    except FileExistsError:  # exists, but is not a directory
        raise NotADirectoryError(
            errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(directory)
        ) from None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp_name, path)
        else:
            os.link(tmp_name, path)
            os.unlink(tmp_name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    with contextlib.suppress(OSError):  # not every file system lets us fsync a directory
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class Profile:
    """A Tox identity and what toxcore saves with it.

    ``path`` is where it was loaded from or last saved to (``None`` for an unsaved profile).
    """

    __slots__ = ("_savedata", "path")

    def __init__(self, savedata: SaveData, path: Path | None = None) -> None:
        self._savedata = savedata
        self.path = path

    @classmethod
    def generate(cls, rng: Rng) -> Profile:
        """A fresh identity (not saved): new key pair and nospam from ``rng``."""
        keys = KeyPair.generate(rng)
        return cls(SaveData(rng(NOSPAM_SIZE), keys.public_key, keys.secret_key))

    @classmethod
    def create(cls, path: str | os.PathLike[str], rng: Rng) -> Profile:
        """Generate a new identity and save it at ``path`` (which must not exist yet).

        Raises:
            ConfigError: ``path`` exists or cannot be written.
        """
        target = Path(path)
        exists = ConfigError(f"{target}: a profile already exists; not overwriting it")
        if target.exists() or target.is_symlink():
            raise exists
        profile = cls.generate(rng)
        try:
            write_file_atomic(target, profile.savedata.encode(), overwrite=False)
        except FileExistsError as exc:
            raise exists from exc
        except OSError as exc:
            raise ConfigError(f"{target}: cannot write profile: {exc.strerror or exc}") from exc
        profile.path = target
        return profile

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Profile:
        """Read a profile file.

        Raises:
            ConfigError: missing, unreadable, encrypted or corrupt file (one line naming it).
        """
        target = Path(path)
        try:
            with open(target, "rb") as f:
                data = f.read(MAX_PROFILE_SIZE_BYTES + 1)
        except FileNotFoundError as exc:
            raise ConfigError(
                f"{target}: profile not found (run `tunnel id` to create one)"
            ) from exc
        except OSError as exc:
            raise ConfigError(f"{target}: cannot read profile: {exc.strerror or exc}") from exc
        if len(data) > MAX_PROFILE_SIZE_BYTES:
            raise ConfigError(f"{target}: not a Tox profile (larger than 64 MiB)")
        if data.startswith(TOX_ENCRYPTED_SAVE_MAGIC):
            raise ConfigError(
                f"{target}: profile is encrypted with a passphrase; encrypted profiles are not "
                "supported (export it unencrypted from your Tox client)"
            )
        try:
            savedata = decode_savedata_untrusted(data)
        except BadPacket as exc:
            raise ConfigError(f"{target}: not a valid Tox profile: {exc}") from exc
        return cls(savedata, target)

    def save(self, path: str | os.PathLike[str] | None = None) -> None:
        """Write the profile atomically with mode 0600 (to ``path``, default: where it came from).

        Raises:
            ConfigError: no path known, or the file cannot be written.
        """
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ConfigError("profile: no file to save to")
        try:
            write_file_atomic(target, self._savedata.encode())
        except OSError as exc:
            raise ConfigError(f"{target}: cannot write profile: {exc.strerror or exc}") from exc
        self.path = target

    @property
    def savedata(self) -> SaveData:
        """Everything stored, as the save-data value."""
        return self._savedata

    def update(self, **changes: object) -> None:
        """Replace fields of :attr:`savedata` (``name=b"..."``, ``friends=(...)``, ...)."""
        self._savedata = dataclasses.replace(self._savedata, **changes)  # type: ignore[arg-type]

    @property
    def key_pair(self) -> KeyPair:
        """The long-term key pair."""
        return self._savedata.key_pair

    @property
    def public_key(self) -> bytes:
        """The long-term public key."""
        return self._savedata.public_key

    @property
    def nospam(self) -> bytes:
        """The four nospam bytes of the Tox ID."""
        return self._savedata.nospam

    @property
    def tox_id(self) -> ToxId:
        """The address friends add: public key, nospam, checksum."""
        return ToxId(self._savedata.public_key, self._savedata.nospam)

    @property
    def friends(self) -> tuple[SavedFriend, ...]:
        """Saved friends (confirmed and pending requests)."""
        return self._savedata.friends

    def set_nospam(self, nospam: bytes) -> None:
        """Change the nospam (old Tox IDs stop working for new friend requests). Not saved."""
        if len(nospam) != NOSPAM_SIZE:
            raise ValueError("nospam must be 4 bytes")
        self._savedata = dataclasses.replace(self._savedata, nospam=bytes(nospam))

    def __repr__(self) -> str:
        return f"Profile({self.tox_id}, path={self.path})"
