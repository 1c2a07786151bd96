"""Authenticated encryption of cache entries before they leave the process (AES-256-GCM).

The storage key is bound into the ciphertext as associated data, so an entry copied under another key,
tampered with, or written with another key fails to open: a cache miss, never an error nor someone else's tokens.
"""
from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = b"\x01"
NONCE = 12


class Sealer:
    def __init__(self, key: bytes):
        if len(key) != 32:
            raise ValueError("the cache encryption key must be 32 bytes (AES-256)")
        self._aead = AESGCM(key)

    @classmethod
    def from_base64(cls, value: str) -> "Sealer":
        try:
            return cls(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            raise ValueError("the cache encryption key must be 32 bytes, base64-encoded") from None

    def seal(self, storage_key: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE)
        return VERSION + nonce + self._aead.encrypt(nonce, plaintext, storage_key.encode())

    def open(self, storage_key: str, sealed: bytes) -> bytes | None:
        if len(sealed) < 1 + NONCE + 16 or sealed[:1] != VERSION:
            return None
        try:
            return self._aead.decrypt(sealed[1:1 + NONCE], sealed[1 + NONCE:], storage_key.encode())
        except InvalidTag:
            return None
