//! What compiling a module will cost, read from its section headers before
//! any compiling: compile time and memory grow with the functions it
//! defines and the bytes of their code.

use wasmparser::{Parser, Payload, TypeRef};

use crate::sandbox::engine::per_job;

use crate::job::JobError;
use crate::limits::Limits;

/// Modules at most this size compile in milliseconds; they have a compile
/// lane of their own, so that they never wait behind a large one.
const SMALL_FUNCTIONS: u32 = 1_000;
const SMALL_CODE_BYTES: u64 = 1 << 20;

/// A module's code, as counted before compiling, and its tables: how many
/// (defined and imported) and the largest it declares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CompileCost {
    pub(crate) functions: u32,
    pub(crate) code_bytes: u64,
    pub(crate) tables: u32,
    pub(crate) table_elements: u64,
}

impl CompileCost {
    /// Reads the table section and the code section's header of a module
    /// (nothing past what does not parse: validation reports that).
    pub(crate) fn of(module: &[u8]) -> CompileCost {
        let mut cost = CompileCost::default();
        for payload in Parser::new(0).parse_all(module) {
            match payload {
                Ok(Payload::ImportSection(imports)) => {
                    let tables = imports
                        .into_imports()
                        .flatten()
                        .filter(|import| matches!(import.ty, TypeRef::Table(_)))
                        .count();
                    cost.tables = cost
                        .tables
                        .saturating_add(u32::try_from(tables).unwrap_or(u32::MAX));
                }
                Ok(Payload::TableSection(tables)) => {
                    cost.tables = cost.tables.saturating_add(tables.count());
                    for table in tables.into_iter().flatten() {
                        cost.table_elements = cost.table_elements.max(table.ty.initial);
                    }
                }
                Ok(Payload::CodeSectionStart { count, size, .. }) => {
                    cost.functions = count;
                    cost.code_bytes = u64::from(size);
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        cost
    }

    /// Whether it goes in the lane for small modules.
    pub(crate) fn is_small(self) -> bool {
        self.functions <= SMALL_FUNCTIONS && self.code_bytes <= SMALL_CODE_BYTES
    }

    /// Refuses a module that would cost more to compile than `limits`
    /// allow, or whose tables could never be instantiated under them.
    pub(crate) fn check(self, limits: &Limits) -> Result<(), JobError> {
        if self.tables > per_job::TABLES {
            return Err(JobError::InvalidModule(format!(
                "the module has {} tables, more than the {} a job may have",
                self.tables,
                per_job::TABLES
            )));
        }
        if self.table_elements > limits.table_elements {
            return Err(JobError::InvalidModule(format!(
                "the module declares a table of {} elements, more than the {} this worker \
                 allows (resource exhausted: table)",
                self.table_elements, limits.table_elements
            )));
        }
        if self.functions > limits.max_functions {
            return Err(JobError::InvalidModule(format!(
                "the module defines {} functions, more than the {} this worker compiles \
                 (its operator can raise --max-functions)",
                self.functions, limits.max_functions
            )));
        }
        if self.code_bytes > limits.max_code_bytes {
            return Err(JobError::InvalidModule(format!(
                "the module has {} bytes of code, more than the {} this worker compiles \
                 (its operator can raise --max-code)",
                self.code_bytes, limits.max_code_bytes
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn functions(count: usize) -> Vec<u8> {
        let text = format!("(module {})", "(func)".repeat(count));
        wat::parse_str(text).unwrap()
    }

    #[test]
    fn functions_and_code_are_counted_and_checked() {
        let cost = CompileCost::of(&functions(2_000));
        assert_eq!(cost.functions, 2_000);
        assert!(cost.code_bytes >= 2_000 * 2);
        assert!(!cost.is_small());
        assert!(CompileCost::of(&functions(3)).is_small());
        assert_eq!(CompileCost::of(b"\0asm\x01\0\0\0"), CompileCost::default());
        let table = CompileCost::of(&wat::parse_str("(module (table 5000 funcref))").unwrap());
        assert_eq!((table.tables, table.table_elements), (1, 5000));
        let five = wat::parse_str(
            r#"(module (import "env" "t" (table 1 funcref))
                 (table 1 funcref) (table 1 funcref) (table 1 funcref) (table 1 funcref))"#,
        )
        .unwrap();
        let error = CompileCost::of(&five)
            .check(&Limits::default())
            .unwrap_err();
        assert!(
            error.to_string().contains("5 tables, more than the 4"),
            "{error}"
        );
        let limits = Limits {
            table_elements: 1000,
            ..Limits::default()
        };
        let error = table.check(&limits).unwrap_err().to_string();
        assert!(
            error.contains("table of 5000 elements, more than the 1000"),
            "{error}"
        );

        let limits = Limits {
            max_functions: 1_999,
            ..Limits::default()
        };
        let error = cost.check(&limits).unwrap_err().to_string();
        assert!(
            error.contains("2000 functions, more than the 1999"),
            "{error}"
        );
        let limits = Limits {
            max_code_bytes: 100,
            ..Limits::default()
        };
        assert!(
            cost.check(&limits)
                .unwrap_err()
                .to_string()
                .contains("bytes of code")
        );
        assert!(cost.check(&Limits::default()).is_ok());
    }
}
