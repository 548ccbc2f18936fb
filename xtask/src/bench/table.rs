//! The bench's one table: sections of measures with their spread, target
//! and whether it was met.

#[derive(Default)]
pub struct Table {
    rows: Vec<Row>,
}

enum Row {
    Section(String),
    Measure {
        what: String,
        result: String,
        spread: String,
        target: String,
        met: Option<bool>,
    },
}

impl Table {
    pub fn section(&mut self, title: impl Into<String>) {
        self.rows.push(Row::Section(title.into()));
    }

    pub fn row(
        &mut self,
        what: impl Into<String>,
        result: impl Into<String>,
        spread: impl Into<String>,
    ) {
        self.rows.push(Row::Measure {
            what: what.into(),
            result: result.into(),
            spread: spread.into(),
            target: String::new(),
            met: None,
        });
    }

    pub fn measured(
        &mut self,
        what: impl Into<String>,
        result: impl Into<String>,
        spread: impl Into<String>,
        target: impl Into<String>,
        met: bool,
    ) {
        self.rows.push(Row::Measure {
            what: what.into(),
            result: result.into(),
            spread: spread.into(),
            target: target.into(),
            met: Some(met),
        });
    }

    pub fn print(&self) {
        let header = ["measure", "median", "spread, detail", "target", "met"];
        let cells: Vec<[String; 5]> = self
            .rows
            .iter()
            .filter_map(|row| match row {
                Row::Section(_) => None,
                Row::Measure {
                    what,
                    result,
                    spread,
                    target,
                    met,
                } => Some([
                    what.clone(),
                    result.clone(),
                    spread.clone(),
                    target.clone(),
                    match met {
                        None => String::new(),
                        Some(true) => "yes".to_owned(),
                        Some(false) => "NO".to_owned(),
                    },
                ]),
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &cells {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: [&str; 5]| {
            let [what, result, spread, target, met] = cells;
            let [w0, w1, w2, w3, _] = widths;
            println!("{what:<w0$}  {result:>w1$}  {spread:<w2$}  {target:<w3$}  {met}")
        };
        line(header);
        let mut measures = cells.iter();
        for row in &self.rows {
            match row {
                Row::Section(title) => println!("-- {title}"),
                Row::Measure { .. } => {
                    let cells = measures.next().expect("one per measure");
                    line(cells.each_ref().map(String::as_str));
                }
            }
        }
    }
}
