//! tenantry
