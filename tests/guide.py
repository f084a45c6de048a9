"""The user guide's code examples, verbatim (only the indentation the text format lost is restored).

``test_guide_examples.py`` checks that every line here stands in the guide, in order.
"""

from __future__ import annotations

from pathlib import Path

GUIDE = Path(__file__).resolve().parents[2] / "shared" / "seed" / "000_2bbdf6d1d2475dd4.txt"

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


def guide_lines() -> list[str]:
    """Non-empty lines of the user guide with surrounding white space removed."""
    return [line.strip() for line in GUIDE.read_text(encoding="utf-8").splitlines() if line.strip()]


def stands_in_guide(snippet: str) -> bool:
    """True when every line of the snippet is a line of the guide, in the guide's order.

    The guide puts prose between its examples; a snippet joining consecutive examples skips it.
    """
    remaining = iter(guide_lines())
    return all(any(line == g for g in remaining) for line in
               (raw.strip() for raw in snippet.strip().splitlines() if raw.strip()))
