//! Roster's read models over the event log (built in a later issue; the crate exists so the layout is the design's).
