//! Proptest strategies for commands and command sequences, for hosts that drive Roster in their own property tests.
