"""WXBizMsgCrypt, WeCom flavour (spec §1): URL verification, decrypt and encrypt of callbacks.

Where the widely copied samples are lax this one is strict: the signature is compared in constant
time, PKCS#7 padding must be 1..32 and consistent, the 4-byte length must fit the buffer, the
receiveid must equal the corp id, and XML with any DOCTYPE is refused (see `parse_xml`). Each
failure raises its own `CallbackCryptoError` subclass; nothing else escapes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import struct
import time
from dataclasses import dataclass
from typing import NoReturn
from xml.parsers import expat

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from wxkf.wecom.errors import (
    CorpIdMismatchError,
    DecryptError,
    InvalidAESKeyError,
    InvalidSignatureError,
    MalformedXMLError,
)

BLOCK_SIZE = 32  # spec §1.3: PKCS#7 with a 32-byte block, not AES's 16


def signature(token: str, timestamp: str, nonce: str, encrypted: str) -> str:
    """spec §1.2: sha1 over the four strings sorted lexicographically, lowercase hex."""
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, encrypted])).encode()).hexdigest()


class _RefusedXML(Exception):
    """Raised from inside expat's handlers: the document declares a DOCTYPE or an entity."""


def _refuse(*_args: object) -> NoReturn:
    raise _RefusedXML("不接受 DOCTYPE 或实体声明 / DOCTYPE and entity declarations are refused")


def parse_xml(text: str | bytes) -> dict[str, str]:
    """Parse a flat WeCom XML document into {tag: text} of the root's children; malformed or hostile
    XML is rejected.

    WeCom's documents never carry a DOCTYPE (spec §1.5, §2), so any DOCTYPE is refused at its first
    byte, before an entity can be declared: no entity expansion (billion laughs), no external entity
    or DTD fetch. expat's own handlers do this directly — defusedxml built a full ElementTree parser
    per document and cost 2.5× as much on every callback.
    """
    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.UnparsedEntityDeclHandler = _refuse
    parser.NotationDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse
    fields: dict[str, str] = {}
    text_parts: list[str] = []
    depth = 0
    nested = False  # a child of the root with elements inside: its text is what came before them

    def start(tag: str, _attributes: dict[str, str]) -> None:
        nonlocal depth, nested
        depth += 1
        if depth == 2:
            text_parts.clear()
            nested = False
        elif depth > 2:
            nested = True

    def end(tag: str) -> None:
        nonlocal depth
        if depth == 2:
            fields[tag] = "".join(text_parts)
        depth -= 1

    def characters(data: str) -> None:
        if depth == 2 and not nested:
            text_parts.append(data)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = characters
    try:
        parser.Parse(text, True)
    except (expat.ExpatError, _RefusedXML, ValueError) as exc:
        raise MalformedXMLError(f"XML 无法解析 / malformed XML: {exc}") from None
    except LookupError:  # `<?xml encoding="x-bogus"?>`: Python knows no such codec
        raise MalformedXMLError("XML 声明了未知的编码 / the XML declares an unknown encoding") from None
    return fields


@dataclass(frozen=True)
class EncryptedReply:
    encrypt: str
    signature: str
    timestamp: str
    nonce: str

    def to_xml(self) -> str:
        """spec §1.6: the passive reply envelope."""
        return (
            f"<xml><Encrypt><![CDATA[{self.encrypt}]]></Encrypt>"
            f"<MsgSignature><![CDATA[{self.signature}]]></MsgSignature>"
            f"<TimeStamp>{self.timestamp}</TimeStamp>"
            f"<Nonce><![CDATA[{self.nonce}]]></Nonce></xml>"
        )


class CallbackCrypto:
    """Verify, decrypt and encrypt callbacks for one (token, EncodingAESKey, corp id)."""

    def __init__(self, token: str, encoding_aes_key: str, corp_id: str) -> None:
        if len(encoding_aes_key) != 43:
            raise InvalidAESKeyError("EncodingAESKey 必须为 43 个字符 / must be 43 characters")
        try:
            key = base64.b64decode(encoding_aes_key + "=", validate=True)
        except (binascii.Error, ValueError) as exc:  # ValueError: non-ASCII characters
            raise InvalidAESKeyError("EncodingAESKey 不是合法的 base64 / is not base64") from exc
        if len(key) != 32:
            raise InvalidAESKeyError("EncodingAESKey 解码后应为 32 字节 / must decode to 32 bytes")
        self._token = token
        self._key = key
        self._corp_id = corp_id
        self._cipher = Cipher(algorithms.AES(key), modes.CBC(key[:16]))

    def __repr__(self) -> str:
        return f"CallbackCrypto(corp_id={self._corp_id!r}, token=***, key=***)"

    # -- signatures ------------------------------------------------------------------------

    def check_signature(self, msg_signature: str, timestamp: str, nonce: str, encrypted: str) -> None:
        expected = signature(self._token, timestamp, nonce, encrypted)
        if not hmac.compare_digest(expected.encode(), msg_signature.lower().encode()):
            raise InvalidSignatureError(
                "签名校验失败：请检查 WECOM_TOKEN 是否与企业微信后台一致 / "
                "msg_signature mismatch: check that WECOM_TOKEN matches the callback settings"
            )

    # -- decrypt ---------------------------------------------------------------------------

    def verify_url(self, msg_signature: str, timestamp: str, nonce: str, echostr: str) -> str:
        """spec §1.4: check the signature over echostr and return its plaintext (the whole reply)."""
        self.check_signature(msg_signature, timestamp, nonce, echostr)
        plain = self.decrypt(echostr)
        try:
            return plain.decode("utf-8", errors="strict")
        except UnicodeDecodeError as exc:  # the reply must be text; a bare UnicodeDecodeError would escape
            raise DecryptError("echostr 明文不是 UTF-8 / echostr plaintext is not UTF-8") from exc

    def decrypt_callback(
        self, msg_signature: str, timestamp: str, nonce: str, body: str | bytes
    ) -> dict[str, str]:
        """spec §1.5: verify and decrypt a POSTed envelope; return the inner XML as {tag: text}."""
        envelope = parse_xml(body)
        encrypted = envelope.get("Encrypt")
        if not encrypted:
            raise MalformedXMLError("回调缺少 <Encrypt> 字段 / the envelope has no <Encrypt>")
        self.check_signature(msg_signature, timestamp, nonce, encrypted)
        return parse_xml(self.decrypt(encrypted))

    def decrypt(self, encrypted: str) -> bytes:
        """spec §1.3: base64 → AES-256-CBC → strict PKCS#7(32) → random(16) | len(4, BE) | msg | receiveid."""
        try:
            data = base64.b64decode(encrypted, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DecryptError("密文不是合法的 base64 / ciphertext is not base64") from exc
        if not data or len(data) % 16:
            raise DecryptError("密文长度不是 16 的倍数 / ciphertext length is not a multiple of 16")
        decryptor = self._cipher.decryptor()
        plain = decryptor.update(data) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= BLOCK_SIZE or pad > len(plain) or plain[-pad:] != bytes([pad]) * pad:
            raise DecryptError(
                "解密失败（填充错误）：请检查 WECOM_AES_KEY / bad padding: check WECOM_AES_KEY"
            )
        plain = plain[:-pad]
        if len(plain) < 20:
            raise DecryptError("明文过短 / plaintext too short")
        (length,) = struct.unpack(">I", plain[16:20])
        if 20 + length > len(plain):
            raise DecryptError("消息长度字段越界 / message length exceeds the buffer")
        message = plain[20 : 20 + length]
        receive_id = plain[20 + length :].decode("utf-8", errors="replace")
        if not hmac.compare_digest(receive_id.encode(), self._corp_id.encode()):
            raise CorpIdMismatchError(
                "消息的 receiveid 与 WECOM_CORP_ID 不一致：请检查企业ID / "
                "receiveid does not match WECOM_CORP_ID"
            )
        return message

    # -- encrypt ---------------------------------------------------------------------------

    def encrypt(self, message: str | bytes, random_prefix: bytes | None = None) -> str:
        raw = message.encode() if isinstance(message, str) else message
        prefix = random_prefix if random_prefix is not None else os.urandom(16)
        if len(prefix) != 16:
            raise ValueError("random_prefix must be 16 bytes")
        buf = prefix + struct.pack(">I", len(raw)) + raw + self._corp_id.encode()
        pad = BLOCK_SIZE - len(buf) % BLOCK_SIZE
        buf += bytes([pad]) * pad
        encryptor = self._cipher.encryptor()
        return base64.b64encode(encryptor.update(buf) + encryptor.finalize()).decode()

    def encrypt_reply(
        self,
        message: str,
        timestamp: str | None = None,
        nonce: str | None = None,
        random_prefix: bytes | None = None,
    ) -> EncryptedReply:
        """Encrypt `message` and sign it, as WeCom does for callbacks and passive replies."""
        ts = timestamp or str(int(time.time()))
        nc = nonce or str(secrets.randbelow(10**10))
        encrypted = self.encrypt(message, random_prefix)
        return EncryptedReply(encrypted, signature(self._token, ts, nc, encrypted), ts, nc)

    def callback_envelope(
        self, message: str, timestamp: str | None = None, nonce: str | None = None
    ) -> tuple[str, dict[str, str]]:
        """Build a WeCom → receiver POST (spec §1.5): the XML body and the query parameters."""
        reply = self.encrypt_reply(message, timestamp, nonce)
        body = (
            f"<xml><ToUserName><![CDATA[{self._corp_id}]]></ToUserName>"
            f"<Encrypt><![CDATA[{reply.encrypt}]]></Encrypt></xml>"
        )
        return body, {"msg_signature": reply.signature, "timestamp": reply.timestamp, "nonce": reply.nonce}
