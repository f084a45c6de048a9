"""The user guide's code examples, verbatim (only the indentation the text format lost is restored),
and one way to run them all in the guide's order.

``scripts/check-guide`` checks that every line here stands in the guide, in order (CI runs it
when the guide is at hand). This module needs nothing but the installed package: run as a
script in an empty directory, it runs every example there and prints what they produced as
JSON on its last line of output (the packaging test does so with a freshly installed wheel).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

CREATE_AND_LOG = """
from secureml.audit import AuditTrail
# Initialize an audit trail
audit = AuditTrail(
    operation_name='credit_risk_model_training',
    log_dir='audit_logs/', # Optional: directory for storing logs
    log_level=20, # Optional: logging level (default: INFO)
    context={'app_version': '1.0.0'}, # Optional: context to include in all logs
    regulations=['GDPR', 'CCPA'] # Optional: regulations this operation should comply with
)
# Log a data access event
audit.log_data_access(
    dataset_name='customer_financial_data',
    columns_accessed=['income', 'credit_score', 'loan_history'],
    num_records=5000,
    purpose='model_training',
    user='analyst_123' # Optional: user who performed the access
)
# Log a data transformation event
audit.log_data_transformation(
    transformation_type='anonymization',
    input_data='raw_customer_data',
    output_data='anonymized_customer_data',
    parameters={
        'method': 'k-anonymity',
        'k': 5,
        'quasi_identifiers': ['age', 'zipcode', 'gender']
    }
)
# Log model training event
audit.log_model_training(
    model_type='random_forest',
    dataset_name='customer_data_anonymized',
    parameters={'n_estimators': 100, 'max_depth': 10},
    metrics={'accuracy': 0.92, 'auc': 0.88},
    privacy_parameters={'epsilon': 1.0, 'delta': 1e-5}
)
# Log model inference event
audit.log_model_inference(
    model_id='credit_risk_classifier_v1',
    input_data='customer_application_123',
    output='high_risk',
    confidence=0.85
)
# Log a compliance check
audit.log_compliance_check(
    check_type='data_minimization',
    regulation='GDPR',
    result=True, # True = passed, False = failed
    details={
        'columns_before': 25,
        'columns_after': 10,
        'columns_removed': ['unnecessary_field_1', 'unnecessary_field_2']
    }
)
# Log a user request (e.g., GDPR right to access)
audit.log_user_request(
    request_type='data_access_request',
    user_id='user_12345',
    details={
        'request_date': '2023-06-20',
        'data_categories': ['personal_info', 'financial_data']
    },
    status='completed'
)
# Close the audit trail
audit.close(
    status='completed', # Or 'error', 'cancelled', etc.
    details={
        'execution_time': 125.7,
        'output_location': 'models/credit_risk_v1.pkl'
    }
)
"""

DECORATOR = """
from secureml.audit import audit_function
# Create a decorated function
@audit_function(
    operation_name='data_preprocessing',
    log_dir='audit_logs',
    regulations=['GDPR']
)
def process_sensitive_data(data, anonymize=True):
    # Function implementation...
    return processed_data
"""

GET_LOGS = """
from secureml.audit import get_audit_logs
# Get logs for a specific operation
logs = get_audit_logs(
    operation_id='12345-abcde-67890', # Optional: specific operation ID
    operation_name='credit_risk_model_training', # Optional: operation name
    start_time='2023-01-01T00:00:00', # Optional: filter by start time
    end_time='2023-06-30T23:59:59', # Optional: filter by end time
    log_dir='audit_logs' # Optional: directory containing logs
)
# Analyze the logs
for log in logs:
    print(f"Event: {log['event_type']} - Time: {log['timestamp']}")
"""

REPORT = """
from secureml.reporting import ReportGenerator
# Create a report generator
generator = ReportGenerator()
# Generate an audit report
report_path = generator.generate_audit_report(
    logs=logs, # Logs retrieved with get_audit_logs
    output_file='audit_report.pdf',
    title='Credit Risk Model Audit Report',
    logo_path='company_logo.png', # Optional
    include_charts=True # Optional: include visualizations
)
print(f"Audit report generated at: {report_path}")
"""

COMPLIANCE = """
from secureml.compliance import ComplianceAuditor
# Create a compliance auditor with audit integration
auditor = ComplianceAuditor(
    regulation='GDPR',
    log_dir='audit_logs' # This enables automatic audit trail creation
)
# The audit trails for all operations will be stored in the log directory
dataset_report = auditor.audit_dataset(
    dataset=df,
    dataset_name='patient_records'
)
"""

ALL = {"create_and_log": CREATE_AND_LOG, "decorator": DECORATOR, "get_logs": GET_LOGS,
       "report": REPORT, "compliance": COMPLIANCE}

# What the guide takes for granted: the reader's own dataset `df` and `company_logo.png`.
PATIENT_RECORDS = {
    "full_name": ["John Smith", "Mary Johnson", "Wei Chen", "Olga Petrova"],
    "email": ["john.smith@example.com", "mary.j@example.org", "wei.chen@example.net", "olga@example.com"],
    "age": [34, 45, 91, 29],
    "zip": ["02134", "10001", "94105", "60601"],
}


def run_logging_examples(scope: dict[str, Any], sync: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Run the trail, decorator and retrieval examples in scope; return what get_audit_logs then finds.

    The decorated function is called once and raises NameError (the guide's body returns an
    undefined name), which its trail records. sync makes what was logged queryable (with Kafka,
    a materializer pass).
    """
    exec(CREATE_AND_LOG, scope)
    exec(DECORATOR, scope)
    try:
        scope["process_sensitive_data"]([3, 1, 2], anonymize=True)
    except NameError as error:
        if "processed_data" not in str(error):
            raise
    else:
        raise AssertionError("the guide's decorated function returned, yet its body names an undefined processed_data")
    sync()
    exec(GET_LOGS, scope)
    from secureml.audit import get_audit_logs

    return {
        "guide_query": scope["logs"],
        "trail": get_audit_logs(operation_id=scope["audit"].operation_id, log_dir="audit_logs"),
        "decorated": get_audit_logs(operation_name="data_preprocessing", log_dir="audit_logs"),
        "by_name": get_audit_logs(operation_name="credit_risk_model_training", log_dir="audit_logs"),
    }


def run_every_example(scope: dict[str, Any]) -> dict[str, Any]:
    """Run all examples in the guide's order in the current directory, the reporting one twice.

    The guide's own query finds nothing (a made-up id, 2023 dates), so its report is rendered
    from that empty list first, then from the trail just logged. scope must hold the reader's
    dataset as ``df``; ``company_logo.png`` must exist.
    """
    produced = run_logging_examples(scope)
    exec(REPORT, scope)
    reports = [scope["report_path"]]
    scope["logs"] = produced["by_name"]
    exec(REPORT, scope)
    reports.append(scope["report_path"])
    exec(COMPLIANCE, scope)
    dataset_report = scope["dataset_report"]
    from secureml.audit import get_audit_logs

    return {
        **produced,
        "reports": reports,
        "compliance": dataset_report.to_dict(),
        "compliance_trail": get_audit_logs(operation_id=dataset_report.operation_id, log_dir="audit_logs"),
    }


def write_png(path: Path, width: int = 48, height: int = 16) -> Path:
    """A solid blue PNG written with the standard library alone (no imaging library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes((11, 61, 145)) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))
    return path


def main() -> None:
    """Run every example in the current directory with a pyarrow dataset; print the results as JSON."""
    import pyarrow

    import secureml.audit

    write_png(Path("company_logo.png"))
    produced = run_every_example({"df": pyarrow.table(PATIENT_RECORDS)})
    print(json.dumps({"package": secureml.audit.__file__, **produced}, default=str))


if __name__ == "__main__":
    main()
