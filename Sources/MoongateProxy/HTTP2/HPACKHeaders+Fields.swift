import MoongatePolicy
import NIOHPACK

extension HPACKHeaders {
    /// Adds header fields as HTTP/2 carries them: names lower-cased (RFC 9113 §8.2.1), those
    /// `keep` refuses left out.
    mutating func addLowercased(_ fields: [HeaderField], where keep: (HeaderField) -> Bool = { _ in true }) {
        for field in fields where keep(field) { add(name: field.name.lowercased(), value: field.value) }
    }
}
