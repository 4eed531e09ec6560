"""PyKMIP's own client runs the symmetric-key lifecycle against a KMIP server:
create, activate, get, get attributes, locate, revoke, destroy, and a Get after Destroy
that must fail with Item Not Found. Prints one line per step; exits non-zero on the first
failure. Used by crates/atrest/tests/pykmip.rs against `atrest kms serve`.

usage: pykmip_client_lifecycle.py HOST PORT CA CERT KEY USERNAME PASSWORD_FILE VERSION
"""
import sys

from kmip import enums
from kmip.pie import exceptions
from kmip.pie.client import ProxyKmipClient

VERSIONS = {
    "1.0": enums.KMIPVersion.KMIP_1_0, "1.1": enums.KMIPVersion.KMIP_1_1,
    "1.2": enums.KMIPVersion.KMIP_1_2, "1.3": enums.KMIPVersion.KMIP_1_3,
    "1.4": enums.KMIPVersion.KMIP_1_4, "2.0": enums.KMIPVersion.KMIP_2_0,
}


def main():
    host, port, ca, cert, key, username, password_file, version = sys.argv[1:]
    password = open(password_file).read().strip()
    c = ProxyKmipClient(hostname=host, port=int(port), cert=cert, key=key, ca=ca,
                        username=username, password=password, config_file="/dev/null",
                        kmip_version=VERSIONS[version])
    name = "pykmip-lifecycle-" + version
    with c:
        uid = c.create(enums.CryptographicAlgorithm.AES, 256, name=name,
                       cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT,
                                                 enums.CryptographicUsageMask.DECRYPT])
        print("create", uid)
        c.activate(uid)
        print("activate ok")
        k = c.get(uid)
        assert len(k.value) == 32, len(k.value)
        assert k.cryptographic_algorithm == enums.CryptographicAlgorithm.AES
        print("get ok, 32 bytes")
        attrs = c.get_attributes(uid, ["State", "Cryptographic Algorithm", "Cryptographic Length"])
        values = {a.attribute_name.value: a.attribute_value.value for a in attrs[1]}
        assert values["State"] == enums.State.ACTIVE, values
        assert values["Cryptographic Length"] == 256, values
        print("get_attributes ok", sorted(values))
        found = c.locate(attributes=[
            c.attribute_factory.create_attribute(enums.AttributeType.NAME, name)])
        assert uid in found, found
        print("locate ok", found)
        try:
            c.destroy(uid)
            raise SystemExit("destroy of an Active key succeeded")
        except exceptions.KmipOperationFailure as e:
            print("destroy of Active key refused:", e.reason)
        c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
        print("revoke ok")
        c.destroy(uid)
        print("destroy ok")
        try:
            c.get(uid)
            raise SystemExit("get after destroy succeeded")
        except exceptions.KmipOperationFailure as e:
            assert e.reason == enums.ResultReason.ITEM_NOT_FOUND, e.reason
            print("get after destroy: ItemNotFound")
    print("lifecycle", version, "ok")


if __name__ == "__main__":
    main()
