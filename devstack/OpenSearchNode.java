// One OpenSearch single node from the Maven Central modules in infra/opensearch/pom.xml (no distribution tarball).
//
//   java -cp '<libs>/*' devstack/OpenSearchNode.java -Epath.home=<dir> -Ehttp.port=<port> [-Ekey=value ...]
//
// The node runs the netty4 transport (HTTP on http.port), analysis-common and painless as classpath plugins: the
// way org.opensearch.test:framework's MockNode starts one, through Node's protected constructor. It is a
// development and test node only: no security plugin, no bootstrap checks, single-node discovery, data under
// path.home. SIGTERM (or stdin closing, when -Dpayments.stdin-watch=true) closes the node and exits.

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.painless.PainlessPlugin;
import org.opensearch.plugins.Plugin;
import org.opensearch.transport.Netty4Plugin;

public final class OpenSearchNode {
    private static final List<Class<? extends Plugin>> PLUGINS =
        List.of(Netty4Plugin.class, CommonAnalysisPlugin.class, PainlessPlugin.class);

    /** Node's constructor that takes classpath plugins is protected: a subclass opens it. */
    private static final class ClasspathNode extends Node {
        ClasspathNode(Environment environment) {
            super(environment, PLUGINS, true);
        }
    }

    public static void main(String[] args) throws Exception {
        Settings.Builder builder = Settings.builder()
            .put("cluster.name", "payments-logs")
            .put("node.name", "payments-logs-1")
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", "9200")
            .put("transport.port", "0")
            // One node, one copy: replicas could never be assigned and would keep the health yellow.
            .put("cluster.routing.allocation.disk.threshold_enabled", "false")
            .put("action.auto_create_index", "true");
        for (String arg : args) {
            if (!arg.startsWith("-E") || !arg.contains("=")) {
                throw new IllegalArgumentException("expected -Ekey=value, got " + arg);
            }
            String pair = arg.substring(2);
            int eq = pair.indexOf('=');
            builder.put(pair.substring(0, eq), pair.substring(eq + 1));
        }
        Settings settings = builder.build();
        String home = settings.get("path.home");
        if (home == null) {
            throw new IllegalArgumentException("-Epath.home=<dir> is required (data and logs live under it)");
        }
        Files.createDirectories(Path.of(home, "config"));
        LogConfigurator.registerErrorListener();
        LogConfigurator.configureWithoutConfig(settings);
        Environment environment = InternalSettingsPreparer.prepareEnvironment(
            settings, Map.of(), Path.of(home, "config"), () -> settings.get("node.name"));
        Node node = new ClasspathNode(environment);
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(10, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                stopped.countDown();
            }
        }, "payments-opensearch-shutdown"));
        node.start();
        System.out.println("OpenSearch node started: http://" + settings.get("network.host") + ":" + settings.get("http.port"));
        if (Boolean.getBoolean("payments.stdin-watch")) {
            while (System.in.read() != -1) {
                // A parent that dies closes our stdin: exit rather than outlive it.
            }
            System.exit(0);
        }
        stopped.await();
    }
}
