//! Binary wire encoding of messages.
