//! Being written (helper "example").
