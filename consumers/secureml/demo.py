"""`secureml-audit demo`: the user guide's ML workflow end to end, on the configured transport."""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from secureml.audit.decorator import audit_function
from secureml.audit.trail import AuditTrail
from secureml.query.logs import connect, get_audit_logs

HELP = "run a realistic ML workflow from the user guide, then query and verify it"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``secureml-audit demo``."""
    parser.description = ("Run the user guide's credit-risk ML workflow (data access, anonymisation, training, "
                          "predictions, compliance checks, a data-subject request, an audited function), "
                          "materialise it into the lake, then query and verify it.")
    parser.add_argument("--log-dir", default="secureml_audit_demo", help="where to write (default: %(default)s)")
    parser.add_argument("--inferences", type=int, default=5000, help="predictions to log (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Run the demo."""
    run_demo(args.log_dir, inferences=args.inferences, out=print)
    return 0


def run_demo(log_dir: str | Path, *, inferences: int = 5000, out: Callable[[str], None] = print) -> dict[str, int]:
    """Log a credit-risk workflow, materialise it, query it back, and print a summary."""
    rng = random.Random(7)
    began = time.perf_counter()
    out(f"secureml-audit demo: logging a credit-risk ML workflow into {log_dir}")

    with AuditTrail(
        operation_name="credit_risk_model_training", log_dir=log_dir, context={"app_version": "1.0.0"},
        regulations=["GDPR", "CCPA"], user="analyst_123",
    ) as audit:
        audit.log_data_access(
            dataset_name="customer_financial_data", columns_accessed=["income", "credit_score", "loan_history"],
            num_records=5000, purpose="model_training", user="analyst_123",
        )
        audit.log_data_transformation(
            transformation_type="anonymization", input_data="raw_customer_data",
            output_data="anonymized_customer_data",
            parameters={"method": "k-anonymity", "k": 5, "quasi_identifiers": ["age", "zipcode", "gender"]},
        )
        audit.log_compliance_check(
            check_type="data_minimization", regulation="GDPR", result=True,
            details={"columns_before": 25, "columns_after": 10},
        )
        audit.log_model_training(
            model_type="random_forest", dataset_name="anonymized_customer_data",
            parameters={"n_estimators": 100, "max_depth": 10}, metrics={"accuracy": 0.92, "auc": 0.88},
            privacy_parameters={"epsilon": 1.0, "delta": 1e-5},
        )

    @audit_function(operation_name="data_preprocessing", log_dir=log_dir, regulations=["GDPR"])
    def process_sensitive_data(rows: list[dict[str, float]], anonymize: bool = True) -> list[dict[str, float]]:
        return [{k: round(v, -3) for k, v in row.items()} if anonymize else row for row in rows]

    process_sensitive_data([{"income": rng.uniform(20_000, 90_000)} for _ in range(100)])

    serving = AuditTrail("credit_risk_scoring", log_dir=log_dir, regulations=["GDPR"], user="scoring-service")
    for i in range(inferences):
        score = rng.random()
        serving.log_model_inference(
            model_id="credit_risk_classifier_v1", input_data=f"customer_application_{i}",
            output="high_risk" if score > 0.7 else "low_risk", confidence=round(max(score, 1 - score), 3),
        )
    serving.log_user_request(
        request_type="data_access_request", user_id="user_12345",
        details={"request_date": "2023-06-20", "data_categories": ["personal_info", "financial_data"]},
        status="completed",
    )
    serving.log_compliance_check(
        check_type="purpose_limitation", regulation="GDPR", result=False,
        details={"finding": "inference requests without a declared purpose"},
    )
    serving.close("completed", {"predictions": inferences})
    logged = time.perf_counter() - began
    total = audit.event_count + serving.event_count + 4  # the decorated call: started, call, return, closed
    out(f"  logged {total} events in {logged:.2f}s")

    from secureml.materializer import materialize

    stats = materialize(log_dir, bootstrap_servers=serving.config.bootstrap_servers, topic=serving.config.topic)
    out(f"  materialised {stats.events} events into the Delta table {Path(log_dir) / 'lake' / 'events'} "
        f"in {stats.seconds:.2f}s")

    con = connect(log_dir)
    by_type = dict(con.execute("SELECT event_type, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC").fetchall())
    operations = con.execute(
        "SELECT operation_name, count(*) AS n, max(status) FILTER (WHERE event_type = 'audit_closed') "
        "FROM events GROUP BY 1 ORDER BY 1"
    ).fetchall()
    failed = get_audit_logs(log_dir=log_dir, event_type="compliance_check")
    out("  events by type: " + ", ".join(f"{t}={n}" for t, n in by_type.items()))
    for name, n, status in operations:
        out(f"  operation {name}: {n} events, status {status}")
    failed_checks = [c["check_type"] for c in failed if not c["result"]]
    out(f"  compliance checks: {len(failed)} recorded, failed: {failed_checks or 'none'}")
    from secureml.integrity import verify
    from secureml.integrity.keys import default_key_path, public_key_path

    public_key = public_key_path(default_key_path())
    integrity = verify(log_dir, public_key=public_key if public_key.is_file() else None)
    checked = ("hash chains and signed checkpoints" if integrity.signed else
               "hash chains only: NOT SIGNED, no signed checkpoint; give the materializer a key with "
               "secureml-audit keygen")
    out(f"  integrity: {integrity.verdict} ({checked}; secureml-audit verify --log-dir {log_dir})")
    out(f"  query it yourself: secureml-audit query --log-dir {log_dir} --event-type compliance_check")
    return Counter(by_type)
