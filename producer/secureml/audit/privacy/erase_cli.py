"""``secureml-audit erase``: erase a data subject by destroying its key (crypto-shredding)."""

from __future__ import annotations

import argparse
import json

from secureml.audit.privacy.erase import erase_subject

HELP = "erase a data subject: destroy its key, so its encrypted values read as <erased> everywhere"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the erase options."""
    parser.description = (
        "Erase a data subject (GDPR Art. 17) by destroying its encryption key: every value encrypted for it reads "
        "as <erased> in every reader, its ids stay only as pseudonyms, the events and their proofs stay valid. "
        "The erasure is recorded as a subject_erased event holding the pseudonym only.")
    parser.add_argument("--log-dir", help="the audit trail's log directory (default: $SECUREML_AUDIT_LOG_DIR or "
                        "secureml_audit_logs)")
    parser.add_argument("--subject", required=True, help="the data subject's id as it was logged (user_id, user, "
                        "or subject=)")
    parser.add_argument("--reason", help="why the subject is erased (recorded, redacted of personal data)")
    parser.add_argument("--legal-basis", default="GDPR Art. 17", help="the legal basis recorded with the erasure "
                        "(default: GDPR Art. 17)")
    parser.add_argument("--by", dest="erased_by", help="who erases (default: the OS user), recorded as a pseudonym")
    parser.add_argument("--bootstrap-servers", help="Kafka brokers (keys in <topic>-keys; default: "
                        "$SECUREML_AUDIT_BOOTSTRAP_SERVERS, else the embedded key store)")
    parser.add_argument("--topic", help="the audit topic (default: $SECUREML_AUDIT_TOPIC or audit-events)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    """Erase the subject and say what was done."""
    result = erase_subject(args.subject, args.log_dir, reason=args.reason, legal_basis=args.legal_basis,
                           erased_by=args.erased_by, bootstrap_servers=args.bootstrap_servers, topic=args.topic)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    elif result["key_destroyed"]:
        print(f"erased subject {result['subject']}: its key is destroyed; its values read as <erased> from now on "
              f"(recorded as event {result['event_id']})")
    else:
        print(f"subject {result['subject']} had no key (nothing encrypted for it, or erased before); the request is "
              f"recorded as event {result['event_id']}")
    return 0
