//! upstream (under construction)
