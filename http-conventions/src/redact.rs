//! Keeping card numbers out of text: an error message that echoes what a client sent, or names
//! something it asked for, passes through here before it leaves.

use std::borrow::Cow;

use crate::luhn::luhn_valid;

/// Which digit runs [`redact_card_numbers`] hides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redact {
    /// Every run of 12 or more digits: for text that echoes what a client sent (a parser's error
    /// message), where a mistyped card number is as sensitive as a valid one.
    AllLongNumbers,
    /// Runs of 12 to 19 digits that pass the Luhn check: for the service's own messages, which may
    /// name long numbers of their own (2^53 - 1, say) but must never carry a card number.
    CardNumbers,
}

/// `text` with every card number in it replaced by `[card number]`. A run of digits may be split
/// by single spaces or dashes, as people write card numbers.
pub fn redact_card_numbers(text: &str, which: Redact) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // The run: digits, with single separators between them.
        let start = i;
        let mut end = i;
        let mut digits = String::new();
        while end < bytes.len() {
            if bytes[end].is_ascii_digit() {
                digits.push(bytes[end] as char);
                end += 1;
            } else if matches!(bytes[end], b' ' | b'-') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit) {
                end += 1;
            } else {
                break;
            }
        }
        let hide = match which {
            Redact::AllLongNumbers => digits.len() >= 12,
            Redact::CardNumbers => (12..=19).contains(&digits.len()) && luhn_valid(&digits),
        };
        if hide {
            let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
            out.push_str(&text[copied..start]);
            out.push_str("[card number]");
            copied = end;
        }
        i = end;
    }
    match out {
        Some(mut out) => {
            out.push_str(&text[copied..]);
            Cow::Owned(out)
        }
        None => Cow::Borrowed(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_numbers_are_redacted_from_text_however_written() {
        let echoed = "invalid type: integer `4242424242424242`, expected a string at line 1 column 40";
        assert_eq!(
            redact_card_numbers(echoed, Redact::AllLongNumbers),
            "invalid type: integer `[card number]`, expected a string at line 1 column 40"
        );
        for written in ["4242 4242 4242 4242", "4242-4242-4242-4242", "4242424242424241"] {
            let text = format!("got {written}.");
            assert_eq!(redact_card_numbers(&text, Redact::AllLongNumbers), "got [card number].", "{written}");
        }
        assert_eq!(redact_card_numbers("no payment 4000000000000002", Redact::CardNumbers), "no payment [card number]");
        let own = "must be at most 9007199254740991; 12 fields, column 40";
        assert_eq!(redact_card_numbers(own, Redact::CardNumbers), own, "not a card number: kept");
        assert_eq!(redact_card_numbers("1234 5678", Redact::AllLongNumbers), "1234 5678");
    }
}
