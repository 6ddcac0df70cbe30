"""What vulture (`make lint`) cannot see being called: names only a framework, a template or a
test uses. Routes, commands and validators are known by their decorators (pyproject.toml)."""

from cityhall.embedded import EmbeddedPostgres
from contracts.payments import contains_card_number
from services.notifications.channels import verify_signature
from services.payments.receipts import ReceiptView
from services.payments.store.postings import unbalanced_postings
from services.runtime.consumer import EventConsumer
from services.runtime.rate_storage import WindowedMemoryStorage
from services.runtime.telemetry import NoLooseQueries

# The tests' own use: a PostgreSQL outage, the refusal rule, a webhook receiver, the ledger's
# invariant (the benchmarks check it too).
EmbeddedPostgres.halt
EmbeddedPostgres.resume
contains_card_number
verify_signature
unbalanced_postings

# The receipt's Jinja2 template (services/payments/templates/receipt.html).
ReceiptView.method_label
ReceiptView.date_wareki
ReceiptView.occurred_at_local
ReceiptView.occurred_at_iso

# A `limits` storage, found by its STORAGE_SCHEME; limits calls these.
WindowedMemoryStorage
WindowedMemoryStorage.base_exceptions
WindowedMemoryStorage.acquire_sliding_window_entry
WindowedMemoryStorage.get_sliding_window
WindowedMemoryStorage.clear_sliding_window
WindowedMemoryStorage.incr
WindowedMemoryStorage.get_expiry
WindowedMemoryStorage.reset

# Tests drive a consumer's batch directly, without a pull loop.
EventConsumer.process_batch

# An OpenTelemetry sampler: the SDK calls these.
NoLooseQueries.should_sample
NoLooseQueries.get_description
