//! core (under construction)
