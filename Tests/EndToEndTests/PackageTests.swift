import Foundation
import Testing
import TestSupport

/// `make deb`'s script, end to end: it builds the package (in .build-deb: `swift
/// test` holds .build's lock), lintian finds no error, and the package unpacked
/// into a throwaway root runs from there, as vxlan-agent and as flanneld.
@Suite("the Debian package", .serialized, .blocking)
struct PackageTests {
    @Test("packaging/deb/build.sh: a .deb with the binary, units, man pages, completions, conffiles and Depends on Debian's libraries only; lintian: no errors; --version runs from a dpkg -x root")
    func package() throws {
        for tool in ["dpkg-deb", "dpkg-shlibdeps", "lintian", "strip"] {
            try #require(FileManager.default.isExecutableFile(atPath: "/usr/bin/\(tool)"),
                         "\(tool) is missing: make deps-deb installs dpkg-dev, lintian and binutils")
        }
        let work = NSTemporaryDirectory() + "vxa-deb-\(getpid())"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }

        // `make test` builds the package first (`make deb`, alone, not beside the
        // parallel tests) and names it in VXA_DEB; run without it, the test builds one.
        let deb: String
        if let given = ProcessInfo.processInfo.environment["VXA_DEB"], !given.isEmpty {
            #expect(FileManager.default.fileExists(atPath: given), "VXA_DEB names \(given), which does not exist")
            deb = given
        } else {
            let build = try run("SCRATCH=\(packageRoot)/.build-deb bash \(packageRoot)/packaging/deb/build.sh \(work)/out")
            #expect(build.status == 0, "\(build.stderr.suffix(3000))")
            deb = build.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        #expect(deb.hasSuffix("/vxlan-agent_0.1.0_\(try sh("dpkg --print-architecture").trimmingCharacters(in: .whitespacesAndNewlines)).deb"), "\(deb)")

        // What it needs from the system: Debian's packages only (the Swift runtime is linked in).
        let control = try sh("dpkg-deb -f \(deb)")
        let depends = try #require(control.split(separator: "\n").first { $0.hasPrefix("Depends: ") })
        #expect(depends.contains("libmnl0") && depends.contains("libc6"), "\(depends)")
        #expect(!depends.lowercased().contains("swift"), "\(depends)")

        let files = try sh("dpkg-deb -c \(deb)")
        for path in ["./usr/bin/vxlan-agent", "./usr/libexec/vxlan-agent/flanneld -> ../../bin/vxlan-agent",
                     "./etc/iproute2/rt_protos.d/vxlan-agent.conf", "./etc/vxlan-agent/config.etcd.example.json",
                     "./lib/systemd/system/vxlan-agent.service", "./lib/systemd/system/vxlan-agent-sync.service",
                     "./lib/systemd/system/vxlan-agent-sync.timer", "./usr/share/man/man1/vxlan-agent.1.gz",
                     "./usr/share/man/man1/vxlan-agent-flanneld.1.gz", "./usr/share/bash-completion/completions/vxlan-agent",
                     "./usr/share/zsh/vendor-completions/_vxlan-agent", "./usr/share/fish/vendor_completions.d/vxlan-agent.fish",
                     "./usr/share/doc/vxlan-agent/copyright"] {
            #expect(files.contains(path), "\(path) is not in the package:\n\(files)")
        }
        let conffiles = try sh("dpkg-deb --ctrl-tarfile \(deb) | tar -xO ./conffiles")
        #expect(conffiles.split(separator: "\n").sorted() == [
            "/etc/iproute2/rt_protos.d/vxlan-agent.conf", "/etc/vxlan-agent/config.etcd.example.json",
            "/etc/vxlan-agent/config.static.example.json", "/etc/vxlan-agent/inventory.example.json",
            "/etc/vxlan-agent/net-conf.example.json",
        ])

        let lintian = try run("lintian --fail-on error \(deb)")
        #expect(lintian.status == 0, "lintian: \(lintian.stdout) \(lintian.stderr)")
        #expect(!lintian.stdout.contains("\nE: ") && !lintian.stdout.hasPrefix("E: "), "\(lintian.stdout)")

        // A throwaway root: the binary runs from there, as itself and as flanneld.
        let root = "\(work)/root"
        try sh("dpkg -x \(deb) \(root)")
        let version = try run("\(root)/usr/bin/vxlan-agent --version")
        #expect(version.status == 0 && version.stdout == "0.1.0\n", "\(version.stdout) \(version.stderr)")
        let flanneld = try run("\(root)/usr/libexec/vxlan-agent/flanneld --version")
        #expect(flanneld.status == 0 && flanneld.stderr == "0.1.0\n", "flanneld prints its version on standard error: \(flanneld.stderr)")
        let unit = try String(contentsOfFile: "\(root)/lib/systemd/system/vxlan-agent.service", encoding: .utf8)
        #expect(unit.contains("ExecStart=/usr/bin/vxlan-agent run"), "\(unit)")
        #expect(try sh("zcat \(root)/usr/share/man/man1/vxlan-agent.1.gz").contains("vxlan-agent"))
    }
}
