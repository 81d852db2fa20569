#pragma once
// Internal to nl/: the injected faults of LABCTL_NL_FAULTS / set_fault_injection (nl.hpp),
// which the request and dump paths of nl.cpp consult (fault.cpp).

namespace labctl::nl::detail {

// The errno to fail the next request with, or 0 to send it.
int injected_fault();
// Whether the next part of a dump answer is to be flagged NLM_F_DUMP_INTR.
bool injected_dump_interrupt();

}  // namespace labctl::nl::detail
