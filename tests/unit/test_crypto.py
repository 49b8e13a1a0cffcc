"""Callback crypto (wecom-api §1): the official vectors, round-trips, and every mutation rejected.

Sets A and B are WeCom's own sample vectors, Set D is derived with a fixed random prefix (§1.9). The
mutation tests feed the decryptor what an attacker or a misconfiguration produces and require the
matching typed `CallbackCryptoError` — never a bare exception.
"""

from __future__ import annotations

import base64
import string
import struct
from xml.etree import ElementTree as ET

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from wxkf.wecom.crypto import BLOCK_SIZE, CallbackCrypto, parse_xml, signature
from wxkf.wecom.errors import (
    CallbackCryptoError,
    CorpIdMismatchError,
    DecryptError,
    InvalidAESKeyError,
    InvalidSignatureError,
    MalformedXMLError,
)

# -- wecom-api §1.9 Set A: the official sample key -----------------------------------------------
A_TOKEN = "QDG6eK"
A_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
A_CORP = "wx5823bf96d3bd56c7"
A_AES_HEX = "8d69989bbaabe67328014c194631ad0719b3dca035b64023df292447aab60760"

A1_SIG, A1_TS, A1_NONCE = "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3", "1409659589", "263014780"
A1_ECHOSTR = "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ=="
A1_PLAIN = "1616140317555161061"

A2_SIG, A2_TS, A2_NONCE = "477715d11cdb4164915debcba66cb864d751f3e6", "1409659813", "1372623149"
A2_ENCRYPT = "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q=="
A2_PLAIN = (
    "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>\n"
    "<FromUserName><![CDATA[mycreate]]></FromUserName>\n"
    "<CreateTime>1409659813</CreateTime>\n"
    "<MsgType><![CDATA[text]]></MsgType>\n"
    "<Content><![CDATA[hello]]></Content>\n"
    "<MsgId>4561255354251345929</MsgId>\n"
    "<AgentID>218</AgentID>\n"
    "</xml>"
)

# -- Set B: the official Python sample ------------------------------------------------------------
B_TOKEN = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo"
B_KEY = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"
B_CORP = "ww1436e0e65a779aee"
B_AES_HEX = "eaa91d32babaf274ca76ece72583b5037ed6da8120a64314be4b6d453a2a854b"

B1_SIG, B1_TS, B1_NONCE = "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb", "1476416373", "47744683"
B1_ECHOSTR = "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA=="
B1_PLAIN = "1288432023552776189"

B2_SIG, B2_TS, B2_NONCE = "0c3914025cb4b4d68103f6bfc8db550f79dcf48e", "1476422779", "1597212914"
B2_ENCRYPT = "Kl7kjoSf6DMD1zh7rtrHjFaDapSCkaOnwu3bqLc5tAybhhMl9pFeK8NslNPVdMwmBQTNoW4mY7AIjeLvEl3NyeTkAgGzBhzTtRLNshw2AEew+kkYcD+Fq72Kt00fT0WnN87hGrW8SqGc+NcT3mu87Ha3dz1pSDi6GaUA6A0sqfde0VJPQbZ9U+3JWcoD4Z5jaU0y9GSh010wsHF8KZD24YhmZH4ch4Ka7ilEbjbfvhKkNL65HHL0J6EYJIZUC2pFrdkJ7MhmEbU2qARR4iQHE7wy24qy0cRX3Mfp6iELcDNfSsPGjUQVDGxQDCWjayJOpcwocugux082f49HKYg84EpHSGXAyh+/oxwaWbvL6aSDPOYuPDGOCI8jmnKiypE+"
B2_BODY = (
    "<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName>\n"
    f"<Encrypt><![CDATA[{B2_ENCRYPT}]]></Encrypt>\n"
    "<AgentID><![CDATA[1000002]]></AgentID>\n"
    "</xml>"
)
B2_PLAIN = (
    "<xml><ToUserName>ww1436e0e65a779aee</ToUserName><FromUserName>ChenJiaShun</FromUserName>"
    "<CreateTime>1476422779</CreateTime><MsgType>text</MsgType><Content>你好</Content>"
    "<MsgId>1456453720</MsgId><AgentID>1000002</AgentID></xml>"
)

# -- Set D: derived with the Set A key and the fixed random prefix ---------------------------------
D_RANDOM = b"aaaabbbbccccdddd"
D1_PLAIN = (
    "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><CreateTime>1409659813</CreateTime>"
    "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event>"
    "<Token><![CDATA[ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR]]></Token>"
    "<OpenKfId><![CDATA[wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q]]></OpenKfId></xml>"
)
D1_TS, D1_NONCE, D1_SIG = "1409659813", "1372623149", "3792293178fb59619a2b91578bc58ffe6701546d"
D1_ENCRYPT = "ZA4HuQypHxnRrA+A6SOHGFqxxD9ER5QQnDDG28c+hiRJtM+LEBSygSEGUaB1F/HjfIbkJrPFBdQHMRl62k09Ys5FWQ0k/hymBw8kfNBlBhBjRxe2z6It/slGdCD3AX3fyK5WWILjCsN23XVZYReooWcUhSAg565t9w40jgVgOdIUblocNLW9siqg406aCFPHHKGt0srnfKhDGUwt0Ze9ahtJwSfIxx83OBPT6U+JGKB04336tjxN1E2Xiyr1gKcI0v4uSViHzY8zZJdoPRNSUf8VEJBETL1jYGhcjzZosSEX20Tp4FKjx3bxQdhV8fUhBw/n9lfrbqOb3JkBe9q/egpQx4c9owmGjeg5Ygkp9YXdmoskhHecjSnBR4e6seYF3XJ08NTsDE7QjVOsvNdJCABelBt1ynzpeXgwDVxyPI4Qu9vY3xKX/PTZlMMt2CuxpdEkIRikxxD9VQtsC1B+m4VRcFeqhfTl8ILaErRvnL7BOT2FbLcPhC7ruw2PEH6k"
D2_ECHOSTR = "ZA4HuQypHxnRrA+A6SOHGBrLwC4qTpioFBAwS8sWQargL2v36cqpkflnTETiEfx1ENyxF//0qabzdITnXXrAGA=="
D2_TS, D2_NONCE, D2_SIG = "1409659589", "263014780", "b309c10440a256fce7ee971dcb3d4bb90bb84b58"


CRYPTO_A = CallbackCrypto(A_TOKEN, A_KEY, A_CORP)  # immutable, shared by the hypothesis tests


@pytest.fixture
def crypto_a() -> CallbackCrypto:
    return CallbackCrypto(A_TOKEN, A_KEY, A_CORP)


@pytest.fixture
def crypto_b() -> CallbackCrypto:
    return CallbackCrypto(B_TOKEN, B_KEY, B_CORP)


def envelope(encrypted: str, corp_id: str = A_CORP) -> str:
    return (
        f"<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
    )


def raw_encrypt(encoding_aes_key: str, buffer: bytes) -> str:
    """AES-256-CBC over a hand-built buffer (no padding added), to forge framing the encryptor won't make."""
    key = base64.b64decode(encoding_aes_key + "=")
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(buffer) + encryptor.finalize()).decode()


def framed(message: bytes, corp_id: str = A_CORP, length: int | None = None) -> bytes:
    """random(16) | len(4, BE) | msg | receiveid — wecom-api §1.3, unpadded."""
    size = len(message) if length is None else length
    return D_RANDOM + struct.pack(">I", size) + message + corp_id.encode()


def pkcs7(buffer: bytes) -> bytes:
    pad = BLOCK_SIZE - len(buffer) % BLOCK_SIZE
    return buffer + bytes([pad]) * pad


# -- official vectors ------------------------------------------------------------------------------


def test_set_a_and_b_keys_decode_to_the_published_aes_keys() -> None:
    for encoding_aes_key, expected in ((A_KEY, A_AES_HEX), (B_KEY, B_AES_HEX)):
        crypto = CallbackCrypto("t", encoding_aes_key, "corp")
        # The key is private state; the vector pins the EncodingAESKey → AESKey rule of §1.1.
        assert crypto._key.hex() == expected


def test_signature_matches_the_official_worked_example() -> None:
    # wecom-api §1.2: sorted("1372623149", "1409659813", "QDG6eK", "RypEv…"), sha1, lowercase hex.
    assert signature(A_TOKEN, A2_TS, A2_NONCE, A2_ENCRYPT) == A2_SIG
    assert signature(A_TOKEN, A1_TS, A1_NONCE, A1_ECHOSTR) == A1_SIG
    assert signature(B_TOKEN, B1_TS, B1_NONCE, B1_ECHOSTR) == B1_SIG
    assert signature(B_TOKEN, B2_TS, B2_NONCE, B2_ENCRYPT) == B2_SIG


def test_a1_url_verification(crypto_a: CallbackCrypto) -> None:
    assert crypto_a.verify_url(A1_SIG, A1_TS, A1_NONCE, A1_ECHOSTR) == A1_PLAIN


def test_a2_post_decrypts_to_the_exact_plaintext(crypto_a: CallbackCrypto) -> None:
    assert crypto_a.decrypt(A2_ENCRYPT).decode() == A2_PLAIN
    fields = crypto_a.decrypt_callback(A2_SIG, A2_TS, A2_NONCE, envelope(A2_ENCRYPT))
    assert fields == {
        "ToUserName": A_CORP,
        "FromUserName": "mycreate",
        "CreateTime": "1409659813",
        "MsgType": "text",
        "Content": "hello",
        "MsgId": "4561255354251345929",
        "AgentID": "218",
    }


def test_b1_url_verification(crypto_b: CallbackCrypto) -> None:
    assert crypto_b.verify_url(B1_SIG, B1_TS, B1_NONCE, B1_ECHOSTR) == B1_PLAIN


def test_b2_post_decrypts_utf8_content(crypto_b: CallbackCrypto) -> None:
    plain = crypto_b.decrypt(B2_ENCRYPT)
    assert plain.decode() == B2_PLAIN
    assert len(plain) == 228  # msg_len counts bytes, not characters (§1.3)
    fields = crypto_b.decrypt_callback(B2_SIG, B2_TS, B2_NONCE, B2_BODY)
    assert fields["Content"] == "你好"
    assert fields["FromUserName"] == "ChenJiaShun"


def test_d1_encrypts_to_the_exact_ciphertext_and_signature(crypto_a: CallbackCrypto) -> None:
    reply = crypto_a.encrypt_reply(D1_PLAIN, D1_TS, D1_NONCE, random_prefix=D_RANDOM)
    assert reply.encrypt == D1_ENCRYPT
    assert reply.signature == D1_SIG
    fields = crypto_a.decrypt_callback(D1_SIG, D1_TS, D1_NONCE, envelope(D1_ENCRYPT))
    assert fields["Event"] == "kf_msg_or_event"
    assert fields["Token"] == "ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR"
    assert fields["OpenKfId"] == "wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q"


def test_d2_echostr_is_exact_and_verifies(crypto_a: CallbackCrypto) -> None:
    reply = crypto_a.encrypt_reply(A1_PLAIN, D2_TS, D2_NONCE, random_prefix=D_RANDOM)
    assert reply.encrypt == D2_ECHOSTR
    assert reply.signature == D2_SIG
    assert crypto_a.verify_url(D2_SIG, D2_TS, D2_NONCE, D2_ECHOSTR) == A1_PLAIN


def test_passive_reply_envelope_carries_the_signed_ciphertext(crypto_a: CallbackCrypto) -> None:
    xml = crypto_a.encrypt_reply(D1_PLAIN, D1_TS, D1_NONCE, random_prefix=D_RANDOM).to_xml()
    fields = parse_xml(xml)
    assert fields == {"Encrypt": D1_ENCRYPT, "MsgSignature": D1_SIG, "TimeStamp": D1_TS, "Nonce": D1_NONCE}


def test_uppercase_signature_hex_is_accepted(crypto_a: CallbackCrypto) -> None:
    assert crypto_a.verify_url(A1_SIG.upper(), A1_TS, A1_NONCE, A1_ECHOSTR) == A1_PLAIN


# -- round-trips -----------------------------------------------------------------------------------

aes_keys = st.binary(min_size=32, max_size=32).map(lambda key: base64.b64encode(key).decode()[:-1])
tokens = st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=32)
xml_text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")))


@settings(max_examples=150, deadline=None)
@given(message=st.text(), corp_id=st.text(), token=tokens, key=aes_keys)
def test_any_unicode_message_and_corp_id_round_trip(message: str, corp_id: str, token: str, key: str) -> None:
    crypto = CallbackCrypto(token, key, corp_id)
    reply = crypto.encrypt_reply(message, "1700000000", "42")
    assert crypto.verify_url(reply.signature, reply.timestamp, reply.nonce, reply.encrypt) == message
    assert len(base64.b64decode(reply.encrypt)) % BLOCK_SIZE == 0  # PKCS#7 to 32, not 16 (§1.3)


@settings(max_examples=100, deadline=None)
@given(content=xml_text, corp_id=tokens, key=aes_keys)  # the envelope's ToUserName holds a real corp id
def test_any_callback_envelope_round_trips(content: str, corp_id: str, key: str) -> None:
    crypto = CallbackCrypto(A_TOKEN, key, corp_id)
    root = ET.Element("xml")
    ET.SubElement(root, "Content").text = content
    body, query = crypto.callback_envelope(ET.tostring(root, encoding="unicode"))
    fields = crypto.decrypt_callback(query["msg_signature"], query["timestamp"], query["nonce"], body)
    assert fields == {"Content": content}


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_ciphertext_raises_only_typed_errors(data: bytes) -> None:
    encrypted = base64.b64encode(data).decode()
    # Decrypting random bytes into valid padding, length and receiveid is ~2^-140: always a typed error.
    with pytest.raises(CallbackCryptoError):
        CRYPTO_A.verify_url(signature(A_TOKEN, "1", "2", encrypted), "1", "2", encrypted)


@settings(max_examples=200, deadline=None)
@given(body=st.text() | st.binary())
def test_arbitrary_bodies_raise_only_typed_errors(body: str | bytes) -> None:
    with pytest.raises(CallbackCryptoError):
        CRYPTO_A.decrypt_callback(A2_SIG, A2_TS, A2_NONCE, body)


# -- mutations: every one rejected with its typed error --------------------------------------------

VECTORS = [
    pytest.param(A1_ECHOSTR, A1_PLAIN, id="A1"),
    pytest.param(A2_ENCRYPT, A2_PLAIN, id="A2"),
    pytest.param(D1_ENCRYPT, D1_PLAIN, id="D1"),
]


def flips(encrypted: str) -> list[str]:
    """Every single-byte flip of the decoded ciphertext, re-encoded."""
    data = base64.b64decode(encrypted)
    out = []
    for index in range(len(data)):
        for mask in (0x01, 0xFF):
            mutated = bytearray(data)
            mutated[index] ^= mask
            out.append(base64.b64encode(bytes(mutated)).decode())
    return out


@pytest.mark.parametrize(("encrypted", "plain"), VECTORS)
def test_every_byte_flip_fails_the_signature(crypto_a: CallbackCrypto, encrypted: str, plain: str) -> None:
    # The signature covers the ciphertext (§1.2), so a flipped byte with the original signature is refused.
    sig = signature(A_TOKEN, "1409659813", "1372623149", encrypted)
    for mutated in flips(encrypted):
        with pytest.raises(InvalidSignatureError):
            crypto_a.verify_url(sig, "1409659813", "1372623149", mutated)
        with pytest.raises(InvalidSignatureError):
            crypto_a.decrypt_callback(sig, "1409659813", "1372623149", envelope(mutated))


@pytest.mark.parametrize(("encrypted", "plain"), [VECTORS[1], VECTORS[2]])
def test_every_re_signed_byte_flip_of_a_callback_is_rejected(encrypted: str, plain: str) -> None:
    # Someone holding the token but not the key can re-sign a flipped ciphertext; framing (padding,
    # length, receiveid) or the XML parse must still refuse every one of them, with a typed error.
    for mutated in flips(encrypted):
        with pytest.raises((DecryptError, CorpIdMismatchError, MalformedXMLError)):
            CRYPTO_A.decrypt_callback(signature(A_TOKEN, "1", "2", mutated), "1", "2", envelope(mutated))


def test_re_signed_echostr_flips_are_typed_or_only_garble_the_first_message_block() -> None:
    # AES-CBC has no MAC: a flip in ciphertext block 0 garbles the random prefix (ignored) and flips the
    # same byte of block 1, i.e. message bytes 0..11 (plaintext offsets 20..31). Only the signature can
    # catch that (see the test above); every other flip must be refused with a typed error.
    data = base64.b64decode(A1_ECHOSTR)
    for index in range(len(data)):
        for mask in (0x01, 0xFF):
            mutated = bytearray(data)
            mutated[index] ^= mask
            encrypted = base64.b64encode(bytes(mutated)).decode()
            try:
                result = CRYPTO_A.verify_url(signature(A_TOKEN, "1", "2", encrypted), "1", "2", encrypted)
            except (DecryptError, CorpIdMismatchError):
                continue
            assert 4 <= index < 16, index
            assert result != A1_PLAIN


@pytest.mark.parametrize(("encrypted", "plain"), VECTORS)
def test_every_truncation_is_rejected(crypto_a: CallbackCrypto, encrypted: str, plain: str) -> None:
    data = base64.b64decode(encrypted)
    for size in range(len(data)):
        mutated = base64.b64encode(data[:size]).decode()
        with pytest.raises(DecryptError):
            crypto_a.verify_url(signature(A_TOKEN, "1", "2", mutated), "1", "2", mutated)
    for size in range(1, len(encrypted)):
        with pytest.raises(DecryptError):
            crypto_a.decrypt(encrypted[:size])


@pytest.mark.parametrize(("encrypted", "plain"), VECTORS)
def test_wrong_key_is_rejected(encrypted: str, plain: str) -> None:
    wrong = CallbackCrypto(A_TOKEN, B_KEY, A_CORP)
    with pytest.raises(DecryptError):
        wrong.decrypt(encrypted)


@pytest.mark.parametrize(("encrypted", "plain"), VECTORS)
def test_wrong_corp_id_is_rejected(encrypted: str, plain: str) -> None:
    for corp_id in ("ww0000000000000000", A_CORP[:-1], A_CORP + "x", ""):
        with pytest.raises(CorpIdMismatchError):
            CallbackCrypto(A_TOKEN, A_KEY, corp_id).decrypt(encrypted)


def test_set_b_corp_cannot_read_set_a_even_with_the_right_key() -> None:
    with pytest.raises(CorpIdMismatchError):
        CallbackCrypto(A_TOKEN, A_KEY, B_CORP).verify_url(A1_SIG, A1_TS, A1_NONCE, A1_ECHOSTR)


@pytest.mark.parametrize(
    ("sig", "ts", "nonce"),
    [
        (A1_SIG, A1_TS, "263014781"),  # wrong nonce
        (A1_SIG, "1409659590", A1_NONCE),  # wrong timestamp
        (A1_SIG[:-1] + "0", A1_TS, A1_NONCE),  # one hex digit off
        (A1_SIG[:-1], A1_TS, A1_NONCE),  # truncated
        ("", A1_TS, A1_NONCE),
        ("签名" * 20, A1_TS, A1_NONCE),
    ],
)
def test_wrong_signature_is_rejected(crypto_a: CallbackCrypto, sig: str, ts: str, nonce: str) -> None:
    with pytest.raises(InvalidSignatureError):
        crypto_a.verify_url(sig, ts, nonce, A1_ECHOSTR)


def test_wrong_token_is_rejected() -> None:
    for token in ("QDG6eL", "qdg6ek", "", A_TOKEN + "x"):
        crypto = CallbackCrypto(token, A_KEY, A_CORP)
        with pytest.raises(InvalidSignatureError):
            crypto.verify_url(A1_SIG, A1_TS, A1_NONCE, A1_ECHOSTR)
        with pytest.raises(InvalidSignatureError):
            crypto.decrypt_callback(A2_SIG, A2_TS, A2_NONCE, envelope(A2_ENCRYPT))


@pytest.mark.parametrize(
    "encrypted",
    [
        "not base64 at all!",
        A1_ECHOSTR.replace("+", " "),  # a '+' lost to naive URL decoding (§1.4)
        A1_ECHOSTR.rstrip("="),  # missing padding
        A1_ECHOSTR + "=",  # excess padding
        "密文" + A1_ECHOSTR,  # non-ASCII
        "",
        base64.b64encode(b"x" * 15).decode(),  # not a whole AES block
    ],
)
def test_bad_base64_is_rejected(crypto_a: CallbackCrypto, encrypted: str) -> None:
    with pytest.raises(DecryptError):
        crypto_a.verify_url(signature(A_TOKEN, "1", "2", encrypted), "1", "2", encrypted)


@pytest.mark.parametrize(
    "buffer",
    [
        pytest.param(framed(b"hello").ljust(64, b"\x00"), id="pad-0"),
        pytest.param(framed(b"hello" * 10 + b"1234567") + b"\x21" * 33, id="pad-33"),
        pytest.param(framed(b"hello").ljust(63, b"\x04") + b"\x05", id="pad-inconsistent"),
        pytest.param(framed(b"hi").ljust(64 - 5, b"\x07") + b"\x03\x05\x05\x05\x05", id="pad-hole"),
        pytest.param(b"\x10" * 16, id="pad-eats-everything"),
        pytest.param(pkcs7(b"short")[:16], id="too-short-for-length"),
    ],
)
def test_bad_padding_is_rejected(crypto_a: CallbackCrypto, buffer: bytes) -> None:
    assert len(buffer) % 16 == 0
    encrypted = raw_encrypt(A_KEY, buffer)
    with pytest.raises(DecryptError):
        crypto_a.decrypt(encrypted)


@pytest.mark.parametrize("length", [len(b"hello") + len(A_CORP) + 1, 10**6, 0xFFFFFFFF])
def test_length_field_beyond_the_buffer_is_rejected(crypto_a: CallbackCrypto, length: int) -> None:
    encrypted = raw_encrypt(A_KEY, pkcs7(framed(b"hello", length=length)))
    with pytest.raises(DecryptError):
        crypto_a.decrypt(encrypted)


def test_well_formed_forged_buffer_is_accepted_so_the_forgery_helpers_are_sound(
    crypto_a: CallbackCrypto,
) -> None:
    assert crypto_a.decrypt(raw_encrypt(A_KEY, pkcs7(framed(b"hello")))) == b"hello"


def test_non_utf8_echostr_plaintext_is_a_decrypt_error(crypto_a: CallbackCrypto) -> None:
    encrypted = crypto_a.encrypt(b"\xff\xfe\xfd")
    with pytest.raises(DecryptError):
        crypto_a.verify_url(signature(A_TOKEN, "1", "2", encrypted), "1", "2", encrypted)


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    "<xml><Encrypt>&lol3;</Encrypt></xml>"
)
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    "<xml><Encrypt>&xxe;</Encrypt></xml>"
)
PARAMETER_ENTITY = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/x.dtd">%remote;]>'
    "<xml><Encrypt>x</Encrypt></xml>"
)
MALFORMED_XML = [
    pytest.param(BILLION_LAUGHS, id="billion-laughs"),
    pytest.param(EXTERNAL_ENTITY, id="external-entity"),
    pytest.param(PARAMETER_ENTITY, id="parameter-entity"),
    pytest.param("not xml", id="not-xml"),
    pytest.param("<xml><Encrypt>unterminated", id="unterminated"),
    pytest.param("", id="empty"),
    pytest.param("<html><body>502 Bad Gateway</body></html>", id="no-encrypt"),
    pytest.param("<xml><Encrypt></Encrypt></xml>", id="empty-encrypt"),
]


@pytest.mark.parametrize("body", MALFORMED_XML)
def test_malformed_or_hostile_envelope_is_rejected(crypto_a: CallbackCrypto, body: str) -> None:
    with pytest.raises(MalformedXMLError):
        crypto_a.decrypt_callback(A2_SIG, A2_TS, A2_NONCE, body)


@pytest.mark.parametrize("inner", [BILLION_LAUGHS, EXTERNAL_ENTITY, "not xml", "<xml>"])
def test_malformed_or_hostile_plaintext_is_rejected(crypto_a: CallbackCrypto, inner: str) -> None:
    # A correctly signed and encrypted message whose plaintext is hostile: still MalformedXMLError.
    reply = crypto_a.encrypt_reply(inner, "1", "2")
    with pytest.raises(MalformedXMLError):
        crypto_a.decrypt_callback(reply.signature, "1", "2", envelope(reply.encrypt))


@pytest.mark.parametrize(
    "encoding_aes_key",
    [A_KEY[:-1], A_KEY + "A", "", "!" * 43, "中" * 43, A_KEY[:-1] + "="],
)
def test_invalid_encoding_aes_key_is_rejected(encoding_aes_key: str) -> None:
    with pytest.raises(InvalidAESKeyError):
        CallbackCrypto(A_TOKEN, encoding_aes_key, A_CORP)


def test_repr_hides_token_and_key(crypto_a: CallbackCrypto) -> None:
    text = repr(crypto_a)
    assert A_TOKEN not in text
    assert A_KEY not in text


def test_any_doctype_is_refused_even_without_entities() -> None:
    with pytest.raises(MalformedXMLError, match="DOCTYPE"):
        parse_xml('<?xml version="1.0"?><!DOCTYPE xml><xml><Encrypt>x</Encrypt></xml>')


_TAG = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,12}", fullmatch=True)
_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=40)


@settings(max_examples=200)
@given(st.dictionaries(_TAG, st.tuples(_TEXT, st.booleans()), max_size=8))
def test_parse_xml_reads_what_elementtree_reads(fields: dict[str, tuple[str, bool]]) -> None:
    """The root's children as {tag: text}, CDATA or escaped, nested children ignored as ET does."""
    root = ET.Element("xml")
    for tag, (text, nested) in fields.items():
        child = ET.SubElement(root, tag)
        child.text = text
        if nested:
            ET.SubElement(child, "Inner").text = "ignored"
    document = ET.tostring(root, encoding="unicode")
    expected = {child.tag: child.text or "" for child in ET.fromstring(document)}
    assert parse_xml(document) == expected
    assert parse_xml(document.encode()) == expected


@pytest.mark.parametrize("encoding", ["x-bogus", "utf-7", "bogus\x00"])
def test_an_unknown_xml_encoding_is_malformed_xml_not_a_lookup_error(encoding: str) -> None:
    with pytest.raises(MalformedXMLError):
        parse_xml(f'<?xml version="1.0" encoding="{encoding}"?><xml><Encrypt>x</Encrypt></xml>'.encode())
