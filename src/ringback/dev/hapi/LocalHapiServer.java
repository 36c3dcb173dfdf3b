package dev.ringback.hapi;

import ca.uhn.fhir.batch2.api.IJobMaintenanceService;
import ca.uhn.fhir.batch2.jobs.config.Batch2JobsConfig;
import ca.uhn.fhir.batch2.jobs.export.BulkDataExportProvider;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.binary.api.IBinaryStorageSvc;
import ca.uhn.fhir.jpa.binstore.MemoryBinaryStorageSvcImpl;
import ca.uhn.fhir.jpa.config.HapiJpaConfig;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect;
import ca.uhn.fhir.jpa.provider.IJpaSystemProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import jakarta.persistence.EntityManagerFactory;
import java.util.Properties;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import javax.sql.DataSource;
import org.apache.commons.dbcp2.BasicDataSource;
import org.eclipse.jetty.ee10.servlet.ServletContextHandler;
import org.eclipse.jetty.ee10.servlet.ServletHolder;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.context.annotation.AnnotationConfigApplicationContext;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;
import org.springframework.context.annotation.Primary;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;

/**
 * A HAPI FHIR R4 JPA server on an in-memory H2 database, for ringback's tests:
 * search (with _lastUpdated and paging), _history and Bulk Data $export.
 * Usage: java -cp ... dev.ringback.hapi.LocalHapiServer PORT
 * Prints "ringback-hapi ready on PORT" once it serves requests at /fhir.
 */
public final class LocalHapiServer {

  private LocalHapiServer() {}

  @Configuration
  @Import({
    JpaR4Config.class,
    HapiJpaConfig.class,
    JpaBatch2Config.class,
    Batch2JobsConfig.class,
    SubscriptionChannelConfig.class,
    ThreadPoolFactoryConfig.class
  })
  public static class Config {
    @Bean
    public DataSource dataSource() {
      BasicDataSource ds = new BasicDataSource();
      ds.setDriver(new org.h2.Driver());
      ds.setUrl("jdbc:h2:mem:ringback;DB_CLOSE_DELAY=-1");
      ds.setUsername("sa");
      ds.setPassword("");
      ds.setMaxTotal(10);
      return ds;
    }

    @Bean
    @Primary
    public LocalContainerEntityManagerFactoryBean entityManagerFactory(
        ConfigurableListableBeanFactory beanFactory, FhirContext fhirContext, JpaStorageSettings storageSettings) {
      LocalContainerEntityManagerFactoryBean emf =
          HapiEntityManagerFactoryUtil.newEntityManagerFactory(beanFactory, fhirContext, storageSettings);
      emf.setPersistenceUnitName("RINGBACK_HAPI_PU");
      emf.setDataSource(dataSource());
      Properties props = new Properties();
      props.put("hibernate.dialect", HapiFhirH2Dialect.class.getName());
      props.put("hibernate.hbm2ddl.auto", "update");
      props.put("hibernate.search.enabled", "false");
      props.put("hibernate.format_sql", "false");
      props.put("hibernate.show_sql", "false");
      emf.setJpaProperties(props);
      return emf;
    }

    @Bean
    @Primary
    public JpaTransactionManager transactionManager(EntityManagerFactory emf) {
      return new JpaTransactionManager(emf);
    }

    @Bean
    public JpaStorageSettings storageSettings() {
      JpaStorageSettings settings = new JpaStorageSettings();
      settings.setAllowExternalReferences(true);
      // Tests create Appointments and Flags referencing patients created in any order.
      settings.setEnforceReferentialIntegrityOnWrite(false);
      settings.setEnforceReferentialIntegrityOnDelete(false);
      settings.setEnableTaskBulkExportJobExecution(true);
      // Every kick-off is a new export (an incremental one must not get an earlier job's files).
      settings.setEnableBulkExportJobReuse(false);
      // Every search reads the database (a repeated search must see what changed since).
      settings.setReuseCachedSearchResultsForMillis(null);
      settings.setJobFastTrackingEnabled(true);
      // Tests start each from an empty server ($expunge everything).
      settings.setExpungeEnabled(true);
      settings.setAllowMultipleDelete(true);
      return settings;
    }

    @Bean
    public PartitionSettings partitionSettings() {
      return new PartitionSettings();
    }

    @Bean
    public IBinaryStorageSvc binaryStorage() {
      return new MemoryBinaryStorageSvcImpl();
    }

    @Bean
    public DatabaseBackedPagingProvider databaseBackedPagingProvider() {
      DatabaseBackedPagingProvider paging = new DatabaseBackedPagingProvider();
      paging.setDefaultPageSize(20);
      paging.setMaximumPageSize(500);
      return paging;
    }
  }

  public static void main(String[] args) throws Exception {
    int port = Integer.parseInt(args[0]);
    AnnotationConfigApplicationContext ctx = new AnnotationConfigApplicationContext(Config.class);

    IFhirSystemDao<?, ?> systemDao = ctx.getBean(IFhirSystemDao.class);
    RestfulServer fhir = new RestfulServer(systemDao.getContext());
    fhir.registerProviders(ctx.getBean(ResourceProviderFactory.class).createProviders());
    fhir.registerProvider(ctx.getBean(IJpaSystemProvider.class));
    fhir.registerProvider(ctx.getBean(BulkDataExportProvider.class));
    fhir.setPagingProvider(ctx.getBean(DatabaseBackedPagingProvider.class));

    Server server = new Server();
    ServerConnector connector = new ServerConnector(server);
    connector.setHost("127.0.0.1");
    connector.setPort(port);
    server.addConnector(connector);
    ServletContextHandler handler = new ServletContextHandler();
    handler.setContextPath("/");
    handler.addServlet(new ServletHolder(fhir), "/fhir/*");
    server.setHandler(handler);
    server.start();
    // Batch2 (Bulk export) advances its jobs in a maintenance pass HAPI schedules once a
    // minute; a test server runs it every half second so an export takes seconds.
    IJobMaintenanceService maintenance = ctx.getBean(IJobMaintenanceService.class);
    ScheduledExecutorService ticker = Executors.newSingleThreadScheduledExecutor(r -> {
      Thread t = new Thread(r, "ringback-batch2-maintenance");
      t.setDaemon(true);
      return t;
    });
    ticker.scheduleWithFixedDelay(() -> {
      try {
        maintenance.runMaintenancePass();
      } catch (RuntimeException e) {
        System.err.println("maintenance pass failed: " + e);
      }
    }, 500, 500, TimeUnit.MILLISECONDS);
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      try {
        server.stop();
      } catch (Exception ignored) {
        // exiting anyway
      }
      ctx.close();
    }));
    System.out.println("ringback-hapi ready on " + port);
    System.out.flush();
    server.join();
  }
}
