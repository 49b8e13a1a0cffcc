"""Callback decrypt+verify throughput, against a baseline measured in the same run.

Baseline: the bare SHA-1 signature plus AES-CBC decrypt of the same ciphertext (what any receiver
must do at minimum). Measured: `CallbackCrypto.decrypt_callback`, i.e. XML envelope parsing, the
constant-time signature check, strict padding/length/corp-id checks and parsing the inner XML.
"""

from __future__ import annotations

import base64
import json
import platform
import time

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from wxkf.wecom.crypto import CallbackCrypto, signature

TOKEN = "QDG6eK"
KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
CORP = "wx5823bf96d3bd56c7"
EVENT = (
    "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><CreateTime>1409659813</CreateTime>"
    "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event>"
    "<Token><![CDATA[ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR]]></Token>"
    "<OpenKfId><![CDATA[wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q]]></OpenKfId></xml>"
)


def rate(fn: object, seconds: float = 1.5) -> float:
    assert callable(fn)
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(200):
            fn()
        count += 200
    return count / elapsed


def main() -> dict[str, float]:
    crypto = CallbackCrypto(TOKEN, KEY, CORP)
    body, query = crypto.callback_envelope(EVENT, timestamp="1409659813", nonce="1372623149")
    encrypted = body.split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    key = base64.b64decode(KEY + "=")
    cipher = Cipher(algorithms.AES(key), modes.CBC(key[:16]))

    def baseline() -> None:
        signature(TOKEN, query["timestamp"], query["nonce"], encrypted)
        d = cipher.decryptor()
        d.update(base64.b64decode(encrypted)) + d.finalize()

    def full() -> None:
        crypto.decrypt_callback(query["msg_signature"], query["timestamp"], query["nonce"], body)

    base_ops = rate(baseline)
    full_ops = rate(full)
    result = {
        "baseline_ops_per_s": round(base_ops),
        "decrypt_verify_ops_per_s": round(full_ops),
        "ratio_to_baseline": round(full_ops / base_ops, 3),
    }
    print(json.dumps({"bench": "crypto", "machine": platform.processor() or platform.machine(), **result}))
    return result


if __name__ == "__main__":
    main()
