import MoongatePolicy
import NIOHPACK

extension HPACKHeaders {
    /// A response block that starts with `:status`, with room for `fields` more fields: one
    /// allocation, where an array literal passed to `init` cost two and the first `add` a third.
    static func response(status: Int, room fields: Int) -> HPACKHeaders {
        var headers = HPACKHeaders()
        headers.reserveCapacity(fields + 1)
        headers.add(name: ":status", value: String(status))
        return headers
    }

    /// Adds header fields as HTTP/2 carries them: names lower-cased (RFC 9113 §8.2.1), those
    /// `keep` refuses left out.
    mutating func addLowercased(_ fields: [HeaderField], where keep: (HeaderField) -> Bool = { _ in true }) {
        for field in fields where keep(field) { add(name: field.name.lowercased(), value: field.value) }
    }
}
