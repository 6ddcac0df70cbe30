"""Settlements (調定): per batch, the newest word of reconciliation (fee, net, matched or not).

Writes ``settlements``.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from services.reporting.projections.rows import Settlement


async def record_settlements(conn: asyncpg.Connection, settlements: Sequence[Settlement]) -> None:
    if not settlements:
        return
    await conn.execute(
        _SETTLEMENTS,
        [r.batch_id for r in settlements],
        [r.facility_code for r in settlements],
        [r.business_date for r in settlements],
        [r.reconciled for r in settlements],
        [r.gross_yen for r in settlements],
        [r.fee_yen for r in settlements],
        [r.as_of for r in settlements],
    )


# The newest word on each settlement batch (the later in the stream on a tie) wins.
_SETTLEMENTS = """
INSERT INTO settlements AS s (batch_id, facility_code, business_date, reconciled, gross_yen,
                              fee_yen, net_yen, as_of)
SELECT DISTINCT ON (t.id) t.id, t.facility, t.day, t.reconciled, t.gross, t.fee,
       t.gross - t.fee, t.as_of
FROM unnest($1::text[], $2::text[], $3::date[], $4::bool[], $5::bigint[], $6::bigint[],
            $7::timestamptz[])
     WITH ORDINALITY AS t(id, facility, day, reconciled, gross, fee, as_of, n)
ORDER BY t.id, t.as_of DESC, t.n DESC
ON CONFLICT (batch_id) DO UPDATE SET
    reconciled = EXCLUDED.reconciled, gross_yen = EXCLUDED.gross_yen,
    fee_yen = EXCLUDED.fee_yen, net_yen = EXCLUDED.net_yen, as_of = EXCLUDED.as_of
WHERE s.as_of <= EXCLUDED.as_of
"""
